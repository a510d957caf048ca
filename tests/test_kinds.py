"""The runtime with every model kind: conditional labels by index or name, the autoencoder without noise."""
import json

import numpy as np
import onnx
import pytest
from conftest import TINY

import edgevae
from edgevae import EdgeVAEError
from edgevae import spec as S
from edgevae.train.data import SHAPE_CLASSES

D = TINY["latent_dim"]


@pytest.fixture(scope="module")
def conditional(kind_export):
    return edgevae.load(kind_export("conditional")[1])


@pytest.fixture(scope="module")
def ae(kind_export):
    return edgevae.load(kind_export("ae")[1])


def test_conditional_graphs_take_int64_labels(kind_export):
    out = kind_export("conditional")[1]
    for name, inputs in ((S.ENCODER_FILE, ["x", "eps", "y"]), (S.DECODER_FILE, ["z", "y"])):
        graph = onnx.load(out / name).graph
        assert [i.name for i in graph.input] == inputs
        assert graph.input[-1].type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert graph.input[-1].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_labels_by_index_or_name(conditional):
    assert conditional.classes == list(SHAPE_CLASSES)
    by_name = conditional.sample(6, seed=1, labels="square")
    assert np.array_equal(by_name, conditional.sample(6, seed=1, labels=1))
    assert np.array_equal(by_name, conditional.sample(6, seed=1, labels=[1] * 6))
    mixed = conditional.sample(3, seed=1, labels=["circle", "square", "triangle"])
    for i in range(3):  # each image decodes with its own label
        assert np.array_equal(mixed[i], conditional.sample(3, seed=1, labels=i)[i])
    assert not np.array_equal(conditional.sample(3, seed=1, labels=0), conditional.sample(3, seed=1, labels=2))
    x = conditional.sample(4, seed=2, labels="triangle")
    enc = conditional.encode(x, seed=0, labels="triangle")
    assert enc.z.shape == (4, D)
    assert conditional.reconstruct(x, labels=2).shape == x.shape
    assert conditional.interpolate(enc.mu[0], enc.mu[1], steps=3, labels="circle").shape == (3, *x.shape[1:])


@pytest.mark.parametrize("labels,message", [
    (None, "this model is conditional: pass labels"),
    ("hexagon", "unknown class 'hexagon'"),
    (3, r"a label \(a class name, or an index\) must be an int in \[0, 2\], got 3"),
    ([0, 1], "labels must be one class or 4 \\(one per image\\), got 2"),
    (True, r"a label \(a class name, or an index\) must be an int"),
])
def test_bad_labels(conditional, labels, message):
    with pytest.raises(EdgeVAEError, match=message):
        conditional.sample(4, seed=0, labels=labels)


def test_unconditional_model_refuses_labels(export_dir):
    with pytest.raises(EdgeVAEError, match="this model is unconditional"):
        edgevae.load(export_dir).sample(2, seed=0, labels=0)


def test_autoencoder_encodes_without_noise(ae, kind_export):
    assert ae.kind == "ae"
    graph = onnx.load(kind_export("ae")[1] / S.ENCODER_FILE).graph
    assert [i.name for i in graph.input] == ["x"] and [o.name for o in graph.output] == ["z"]
    assert ae.prior is None  # an AE is not trained towards N(0, I): sampling is refused, decoding is not
    with pytest.raises(EdgeVAEError, match="sample: this model has no prior to sample from"):
        ae.sample(5, seed=0)
    x = ae.decode(edgevae.standard_normal(0, (5, *ae.latent_shape)))
    enc = ae.encode(x)
    assert enc.logvar is None and np.array_equal(enc.z, enc.mu)
    assert np.array_equal(ae.encode_mean(x), enc.z)
    assert np.array_equal(ae.reconstruct(x), ae.decode(enc.z))
    with pytest.raises(EdgeVAEError, match="plain autoencoder; it takes no seed or eps"):
        ae.encode(x, seed=0)


def test_gaussian_spec_carries_its_learned_sigma(kind_export):
    from edgevae.export.build import load_run

    run, out = kind_export("gaussian")
    spec = edgevae.load(out).spec
    vae, _ = load_run(run)
    assert spec["likelihood"] == "gaussian"
    assert np.allclose(spec["likelihood_params"]["log_sigma"], vae.likelihood.log_sigma.detach().flatten().numpy())


def test_cli_label_flag(kind_export, tmp_path):
    from conftest import run_cli

    out = kind_export("conditional")[1]
    r = run_cli("sample", str(out), "--n", "4", "--label", "square", "--out", str(tmp_path / "s.png"))
    assert r.returncode == 0, r.stderr
    r = run_cli("sample", str(out), "--n", "4", "--out", str(tmp_path / "s.png"))
    assert r.returncode == 2 and "pass labels" in r.stderr
    info = run_cli("info", str(out))
    assert "classes     circle, square, triangle" in info.stdout
    assert json.loads(run_cli("info", str(out), "--json").stdout)["decoder"]["classes"] == list(SHAPE_CLASSES)


def test_cli_info_and_encode_on_every_kind(kind_export, tmp_path):
    """info prints for a likelihood without graph ELBO; encode writes .npy + .json for the autoencoder."""
    from conftest import run_cli

    out = kind_export("continuous-bernoulli")[1]
    r = run_cli("info", str(out))
    assert r.returncode == 0, r.stderr
    assert "ELBO parity not computed" in r.stdout and "variant     int8: " in r.stdout
    ae_out = kind_export("ae")[1]
    image = tmp_path / "x.png"
    from PIL import Image

    ae = edgevae.load(ae_out)
    Image.fromarray(edgevae.to_uint8(ae.decode(edgevae.standard_normal(0, (1, *ae.latent_shape))))[0, 0]).save(image)
    r = run_cli("encode", str(ae_out), str(image), "--out", str(tmp_path / "codes"))
    assert r.returncode == 0, r.stderr
    assert f"wrote {tmp_path / 'codes'} (mu 1x{D})" in r.stdout  # the file is named exactly as --out says
    assert np.load(tmp_path / "codes").shape == (1, D)
    assert json.loads((tmp_path / "codes.json").read_text())["images"][0]["logvar"] is None


def test_manifest_and_graph_paths_that_are_not_files(export_dir, tmp_path):
    import shutil

    d = shutil.copytree(export_dir, tmp_path / "e")
    manifest = json.loads((d / S.MANIFEST).read_text())
    (d / S.MANIFEST).write_text(json.dumps({**manifest, "variants": ["fp32"]}))
    with pytest.raises(EdgeVAEError, match="variants must be an object with 1 to 16 variants"):
        edgevae.load(d)
    (d / S.MANIFEST).write_text(json.dumps(manifest))
    (d / S.ENCODER_FILE).unlink()
    (d / S.ENCODER_FILE).mkdir()
    with pytest.raises(EdgeVAEError, match="encoder.onnx: is a directory, not a regular file"):
        edgevae.load(d)
