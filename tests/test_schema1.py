"""Exports written before schema 2 still load and compute what they did.

tests/data/schema1-export was written by EdgeVAE 0.1.0 (spec schema 1: `latent_dim`, no latent_shape, no
preprocessing record), and the .npy files beside it hold what that version's runtime returned for it.
"""
import json

import numpy as np
from conftest import ROOT, run_cli

import edgevae

DATA = ROOT / "tests" / "data"
OLD = DATA / "schema1-export"


def test_a_schema1_export_loads_and_reads_in_schema2_terms():
    model = edgevae.load(OLD)
    assert model.spec["schema_version"] == 1  # the file is not rewritten: it is read in schema-2 terms
    assert model.latent_shape == (3,) and model.latent_dim == 3 and model.image_mode == "L"
    assert model.prior == "standard_normal"  # a VAE of that era was always trained towards N(0, I)
    # what the 0.1 runtime did to image files: stretch to H x W (bilinear), alpha onto black
    assert model.preprocessing == {"mode": "L", "fit": "stretch", "resample": "bilinear", "alpha": "matte",
                                   "matte": [0, 0, 0]}


def test_a_schema1_export_gives_the_same_numbers_as_before():
    model = edgevae.load(OLD)
    # Same graphs, same noise generator, same onnxruntime: bit-identical, not merely close.
    assert np.array_equal(model.sample(4, seed=0), np.load(DATA / "schema1-export-sample-seed0.npy"))
    z = model.encode(model.sample(2, seed=5), seed=1).z
    assert np.array_equal(z, np.load(DATA / "schema1-export-encode-seed1.npy"))


def test_a_schema1_export_through_the_cli(tmp_path):
    r = run_cli("sample", str(OLD), "--n", "4", "--out", str(tmp_path / "g.png"))
    assert r.returncode == 0, r.stderr
    r = run_cli("info", str(OLD), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["decoder"]["latent_shape"] == [3]
