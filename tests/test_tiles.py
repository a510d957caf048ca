"""Tiled decoding and encoding (runtime/_tiles.py) on a tileable export: tiles cover the latent, blending
weights are a partition of unity, tiled output approaches the whole decode as the overlap grows, errors."""
import sys

import numpy as np
import pytest
from conftest import ROOT, run_cli

import edgevae
from edgevae import _tiles

sys.path.insert(0, str(ROOT / "tests" / "byo"))
import user_vaes  # noqa: E402


@pytest.fixture(scope="module")
def tileable(tmp_path_factory):
    """The spatial user module (4 px per latent cell) exported at 64x64: a 16x16 latent to tile."""
    from edgevae.export import export_vae

    return export_vae(user_vaes.spatial(), (3, 64, 64), tmp_path_factory.mktemp("tiles") / "e", log=lambda *_: None)


def test_starts_cover_the_axis_with_the_overlap():
    assert _tiles.starts(16, 16, 4) == [0] and _tiles.starts(10, 16, 4) == [0]
    assert _tiles.starts(16, 8, 2) == [0, 4, 8]  # three tiles, spread evenly, the last flush with the end
    assert _tiles.starts(64, 32, 8) == [0, 16, 32] and _tiles.starts(64, 16, 4) == [0, 12, 24, 36, 48]
    for length, tile, overlap in ((64, 16, 4), (37, 8, 3), (9, 2, 1)):
        s = _tiles.starts(length, tile, overlap)
        assert s[0] == 0 and s[-1] + tile == length and all(b - a <= tile - overlap for a, b in zip(s, s[1:]))


def test_tiles_are_a_partition_of_unity():
    total = np.zeros((64, 64))
    for _, pixels, weight in _tiles._plan((16, 16), 6, 2, 4, "linear"):
        total[pixels] += weight
    # linear ramps of neighbours add up to one across each overlap (the 1e-3 floor aside)
    assert np.allclose(total, 1.0, atol=2e-3)


def test_tiled_decode_approaches_the_whole_decode(tileable):
    model = edgevae.load(tileable)
    z = edgevae.standard_normal(0, (2, 4, 16, 16))
    whole = model.decode(z)
    assert np.array_equal(model.decode(z, tile=16), whole)
    no_overlap = np.abs(model.decode(z, tile=8, overlap=0) - whole).max()
    overlap = np.abs(model.decode(z, tile=8, overlap=4) - whole).max()
    # zero padding at tile borders and per-tile GroupNorm statistics: visible seams without overlap, less with
    assert overlap < no_overlap
    assert np.abs(model.decode(z, tile=8, overlap=4) - whole).mean() < 0.02


def test_tiled_encode_keeps_z_mu_logvar_consistent(tileable):
    model = edgevae.load(tileable)
    x = model.decode(edgevae.standard_normal(1, (2, 4, 16, 16)))
    eps = edgevae.standard_normal(2, (2, 4, 16, 16))
    whole, tiled = model.encode(x, eps=eps), model.encode(x, eps=eps, tile=8, overlap=4)
    assert tiled.z.shape == whole.z.shape == (2, 4, 16, 16)
    assert np.allclose(tiled.z, tiled.mu + np.exp(0.5 * tiled.logvar) * eps, atol=1e-6)
    assert np.abs(tiled.mu - whole.mu).mean() < 0.05


def test_default_tiling_from_load_and_the_cli(tileable, tmp_path):
    model = edgevae.load(tileable, tile=8, overlap=2)
    z = edgevae.standard_normal(0, (1, 4, 16, 16))
    assert np.array_equal(model.sample(1, seed=0), edgevae.load(tileable).decode(z, tile=8, overlap=2))
    r = run_cli("sample", str(tileable), "--n", "1", "--tile", "8", "--overlap", "2", "--out", str(tmp_path / "s.png"))
    assert r.returncode == 0, r.stderr
    want = edgevae.to_uint8(model.sample(1, seed=0))[0].transpose(1, 2, 0)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png"))[2:-2, 2:-2], want)


@pytest.mark.parametrize("kwargs,message", [
    (dict(tile=0), r"tile \(latent cells per tile side\) must be an int in \[1, 16\]"),
    (dict(tile=8, overlap=8), r"overlap \(latent cells\) must be an int in \[0, 7\]"),
    (dict(tile=2.5), "must be an int"),
])
def test_bad_tiles_are_refused(tileable, kwargs, message):
    model = edgevae.load(tileable)
    with pytest.raises(edgevae.EdgeVAEError, match=message):
        model.decode(np.zeros((1, 4, 16, 16), np.float32), **kwargs)


def test_a_fixed_size_export_is_not_tileable(export_dir):
    with pytest.raises(edgevae.EdgeVAEError, match="not tileable"):
        edgevae.load(export_dir).decode(np.zeros((1, 4), np.float32), tile=2)
