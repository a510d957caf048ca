"""The torch-free runtime: API surface, determinism, PNG output, bad input, refused files, imports."""
import hashlib
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtime
from runtime import EdgeVAEError
from runtime import spec as S

from conftest import ROOT, TINY

D, SHAPE = TINY["latent_dim"], (1, TINY["image_size"], TINY["image_size"])


@pytest.fixture(scope="module")
def model(export_dir):
    return runtime.load(export_dir)


def test_public_names_are_pinned():
    assert sorted(runtime.__all__) == ["EdgeVAEError", "Encoding", "Model", "load", "make_grid", "save_grid",
                                       "standard_normal", "to_uint8"]
    for name in runtime.__all__:
        assert getattr(runtime, name).__doc__, f"{name} needs a docstring"


def test_import_runtime_loads_no_torch_or_onnx():
    # A fresh interpreter: this pytest process has torch loaded already.
    code = ("import sys, runtime; m = runtime.load(sys.argv[1]) if len(sys.argv) > 1 else None; "
            "print(' '.join(sorted({k.split('.')[0] for k in sys.modules} & {'torch', 'onnx', 'train', 'export'})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_sample_is_deterministic_by_seed(model):
    a, b, c = model.sample(16, seed=3), model.sample(16, seed=3), model.sample(16, seed=4)
    assert a.shape == (16, *SHAPE) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(model.sample(5, seed=3), a[:5])  # a sample of 5 is a prefix of a sample of 16
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_sample_is_decode_of_seeded_noise(model):
    eps = runtime.standard_normal(9, (6, D))
    assert np.array_equal(model.sample(6, seed=9), model.decode(eps))
    assert np.array_equal(model.sample(6, seed=9, temperature=0.5), model.decode(eps * np.float32(0.5)))


def test_encode_with_seed_or_eps(model):
    x = model.sample(8, seed=1)
    enc = model.encode(x, seed=2)
    assert isinstance(enc, runtime.Encoding) and enc.z.shape == enc.mu.shape == enc.logvar.shape == (8, D)
    same = model.encode(x, eps=runtime.standard_normal(2, (8, D)))
    assert np.array_equal(enc.z, same.z)
    np.testing.assert_allclose(enc.z, enc.mu + np.exp(0.5 * enc.logvar) * runtime.standard_normal(2, (8, D)),
                               atol=1e-5, rtol=0)  # numpy's float32 exp vs onnxruntime's: last-bit rounding
    assert np.array_equal(model.reconstruct(x), model.decode(enc.mu))


def test_large_n_is_chunked_and_equal_to_small_calls(model):
    from runtime._model import CHUNK

    big = model.sample(CHUNK + 5, seed=0)
    assert big.shape[0] == CHUNK + 5
    np.testing.assert_array_equal(big[:5], model.sample(5, seed=0))


def test_png_is_byte_identical_for_a_seed(model, tmp_path):
    paths = [runtime.save_grid(model.sample(64, seed=s), tmp_path / f"{i}.png") for i, s in enumerate((0, 0, 1))]
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert digests[0] == digests[1] != digests[2]
    from PIL import Image

    with Image.open(paths[0]) as im:
        assert im.mode == "L" and im.size == (8 * 30 + 2, 8 * 30 + 2)  # 8x8 tiles of 28 px, 2 px padding


def test_rgb_grid():
    images = np.zeros((2, 3, 4, 4), np.float32)
    images[1, 0] = 1.0  # second image pure red
    grid = runtime.make_grid(images, nrow=2, padding=1)
    assert grid.shape == (6, 11, 3)
    assert grid[1:5, 6:10].tolist() == [[[255, 0, 0]] * 4] * 4 and grid[1:5, 1:5].max() == 0


def test_thread_safe(model):
    seeds = list(range(32))
    serial = [model.sample(4, seed=s) for s in seeds]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda s: model.sample(4, seed=s), seeds * 4))
    for i, out in enumerate(parallel):
        assert np.array_equal(out, serial[i % len(seeds)])


@pytest.mark.parametrize("call,message", [
    (lambda m: m.decode(np.zeros((2, D + 1), np.float32)), r"z must have shape \(N, 4\), got \(2, 5\)"),
    (lambda m: m.decode(np.zeros((D,), np.float32)), r"z must have shape \(N, 4\), got \(4,\)"),
    (lambda m: m.decode(np.full((1, D), np.nan, np.float32)), "NaN or Inf"),
    (lambda m: m.decode(np.array([["a"] * D])), "must be a float array"),
    (lambda m: m.encode(np.full((1, *SHAPE), 2.0, np.float32), seed=0), r"values must lie in \[0.0, 1.0\]"),
    (lambda m: m.encode(np.zeros((1, 1, 8, 8), np.float32), seed=0), r"x must have shape \(N, 1, 28, 28\)"),
    (lambda m: m.sample(0, seed=0), r"n must be an int in \[1, 65536\], got 0"),
    (lambda m: m.sample(-3, seed=0), "got -3"),
    (lambda m: m.sample(10**9, seed=0), "got 1000000000"),
    (lambda m: m.sample(2, seed=0, eps=np.zeros((2, D))), "not both"),
    (lambda m: m.sample(2, eps=np.zeros((3, D))), r"eps must have shape \(2, 4\), got \(3, 4\)"),
    (lambda m: m.sample(2, seed=0, temperature=-1), "temperature must be"),
])
def test_bad_input_raises_edgevae_error_with_expected_and_actual(model, call, message):
    with pytest.raises(EdgeVAEError, match=message):
        call(model)


def test_unwritable_png_path(model, tmp_path):
    with pytest.raises(EdgeVAEError, match="cannot write"):
        runtime.save_grid(model.sample(1, seed=0), tmp_path / "no" / "such" / "dir" / "x.png")


def _copy(export_dir, tmp_path, name="copy"):
    return shutil.copytree(export_dir, tmp_path / name)


def test_tampered_graph_is_refused(export_dir, tmp_path):
    d = _copy(export_dir, tmp_path)
    data = bytearray((d / S.DECODER_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / S.DECODER_FILE).write_bytes(bytes(data))
    with pytest.raises(EdgeVAEError, match="does not match the manifest"):
        runtime.load(d)


def test_missing_graph_and_missing_manifest_are_refused(export_dir, tmp_path):
    d = _copy(export_dir, tmp_path)
    (d / S.ENCODER_FILE).unlink()
    with pytest.raises(EdgeVAEError, match="encoder.onnx is missing"):
        runtime.load(d)
    (d / S.MANIFEST).unlink()
    with pytest.raises(EdgeVAEError, match="manifest.json is missing"):
        runtime.load(d)
    with pytest.raises(EdgeVAEError, match="no such directory"):
        runtime.load(tmp_path / "nowhere")


def test_graphs_from_different_exports_are_refused(export_dir, run_dir, tmp_path):
    from export.build import export

    other = export(run_dir, tmp_path / "other", log=lambda *_: None)
    d = _copy(export_dir, tmp_path)
    shutil.copy(other / S.DECODER_FILE, d / S.DECODER_FILE)  # a decoder from another export ...
    manifest = json.loads((d / S.MANIFEST).read_text())  # ... with its hash "fixed up" to pass the check
    manifest["files"][S.DECODER_FILE]["sha256"] = hashlib.sha256((d / S.DECODER_FILE).read_bytes()).hexdigest()
    (d / S.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(EdgeVAEError, match="different exports"):
        runtime.load(d)


def test_spec_from_a_future_schema_is_refused():
    spec = {k: 1 for k in S.REQUIRED_FIELDS} | {"schema_version": S.SCHEMA_VERSION + 1}
    with pytest.raises(EdgeVAEError, match="schema_version 2 is not supported"):
        S.loads(json.dumps(spec), "encoder.onnx")
