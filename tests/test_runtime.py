"""The torch-free runtime: API surface, determinism, PNG output, bad input, refused files, imports."""
import hashlib
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import ROOT, TINY

import edgevae
from edgevae import EdgeVAEError
from edgevae import spec as S

D, SHAPE = TINY["latent_dim"], (1, TINY["image_size"], TINY["image_size"])


@pytest.fixture(scope="module")
def model(export_dir):
    return edgevae.load(export_dir)


def test_public_names_are_pinned():
    assert sorted(edgevae.__all__) == ["EdgeVAEError", "Encoding", "Model", "load", "load_images", "make_grid",
                                       "save_grid", "standard_normal", "to_uint8"]
    for name in edgevae.__all__:
        assert getattr(edgevae, name).__doc__, f"{name} needs a docstring"


def test_import_runtime_loads_no_torch_or_onnx(export_dir):
    # A fresh interpreter: this pytest process has torch loaded already. Loading and sampling too.
    code = ("import sys, edgevae; edgevae.load(sys.argv[1]).sample(2, seed=0); "
            "print(' '.join(sorted({k for k in sys.modules if k.split('.')[0] in ('torch', 'onnx', 'train', 'export') "
            "or k.startswith(('edgevae.train', 'edgevae.export'))})))")
    out = subprocess.run([sys.executable, "-c", code, str(export_dir)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_sample_is_deterministic_by_seed(model):
    a, b, c = model.sample(16, seed=3), model.sample(16, seed=3), model.sample(16, seed=4)
    assert a.shape == (16, *SHAPE) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(model.sample(5, seed=3), a[:5])  # a sample of 5 is a prefix of a sample of 16
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_sample_is_decode_of_seeded_noise(model):
    eps = edgevae.standard_normal(9, (6, D))
    assert np.array_equal(model.sample(6, seed=9), model.decode(eps))
    assert np.array_equal(model.sample(6, seed=9, temperature=0.5), model.decode(eps * np.float32(0.5)))



def test_one_seeded_image_is_the_general_paths_image(export_dir, monkeypatch):
    # sample(1, seed=s) takes a shorter path (runtime/_model.py): the same noise, the same checks
    from edgevae._load import Graph

    model = edgevae.load(export_dir)
    calls = []
    shorter = Graph.x_hat_of
    monkeypatch.setattr(Graph, "x_hat_of", lambda self, *args: calls.append(1) or shorter(self, *args))
    for seed in (0, 1, 2**32 + 5, 2**64 - 1):
        one = model.sample(1, seed=seed)
        assert one.shape == (1, *SHAPE) and one.dtype == np.float32
        assert np.array_equal(one, model.sample(3, seed=seed)[:1])
        assert np.array_equal(one, model.decode(edgevae.standard_normal(seed, (1, D))))
    assert len(calls) == 4  # the shorter path ran for every seed above
    for bad in (-1, 2**64, 1.5, True):
        with pytest.raises(EdgeVAEError, match="seed"):
            model.sample(1, seed=bad)
    for bad in (True, 1.0, np.float64(1)):  # what the general path refuses, the shorter one does not take
        with pytest.raises(EdgeVAEError, match="n must be an int"):
            model.sample(bad, seed=0)


@pytest.mark.parametrize("returned, fragment", [
    (lambda shape: [np.full(shape, np.nan, np.float32)], "decoder overflowed"),
    (lambda shape: [np.zeros((2, *shape[1:]), np.float32)], "must be float32 (1, 1, 28, 28)"),
    (lambda shape: [np.zeros(shape, np.float64)], "must be float32"),
])
def test_one_seeded_image_is_checked_as_any_output(export_dir, returned, fragment):
    model = edgevae.load(export_dir)
    model.sample(1, seed=0)  # the session exists; now its runs return what the graph must never return
    model._decoder._run = lambda names, feed, options: returned((1, *SHAPE))
    with pytest.raises(EdgeVAEError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        model.sample(1, seed=0)

def test_encode_with_seed_or_eps(model):
    x = model.sample(8, seed=1)
    enc = model.encode(x, seed=2)
    assert isinstance(enc, edgevae.Encoding) and enc.z.shape == enc.mu.shape == enc.logvar.shape == (8, D)
    same = model.encode(x, eps=edgevae.standard_normal(2, (8, D)))
    assert np.array_equal(enc.z, same.z)
    np.testing.assert_allclose(enc.z, enc.mu + np.exp(0.5 * enc.logvar) * edgevae.standard_normal(2, (8, D)),
                               atol=1e-5, rtol=0)  # numpy's float32 exp vs onnxruntime's: last-bit rounding
    assert np.array_equal(model.reconstruct(x), model.decode(enc.mu))


def test_large_n_is_chunked_and_equal_to_small_calls(model):
    from edgevae._model import CHUNK

    big = model.sample(CHUNK + 5, seed=0)
    assert big.shape[0] == CHUNK + 5
    np.testing.assert_array_equal(big[:5], model.sample(5, seed=0))


def test_png_is_byte_identical_for_a_seed(model, tmp_path):
    paths = [edgevae.save_grid(model.sample(64, seed=s), tmp_path / f"{i}.png") for i, s in enumerate((0, 0, 1))]
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert digests[0] == digests[1] != digests[2]
    from PIL import Image

    with Image.open(paths[0]) as im:
        assert im.mode == "L" and im.size == (8 * 30 + 2, 8 * 30 + 2)  # 8x8 tiles of 28 px, 2 px padding


def test_rgb_grid():
    images = np.zeros((2, 3, 4, 4), np.float32)
    images[1, 0] = 1.0  # second image pure red
    grid = edgevae.make_grid(images, nrow=2, padding=1)
    assert grid.shape == (6, 11, 3)
    assert grid[1:5, 6:10].tolist() == [[[255, 0, 0]] * 4] * 4 and grid[1:5, 1:5].max() == 0


def test_thread_safe_8_threads_x_100_calls(model):
    rng = np.random.default_rng(0)
    x = rng.random((100, *SHAPE), dtype=np.float32)
    jobs = [(kind, i) for i in range(100) for kind in ("sample", "encode")] * 4  # 800 calls
    run = {"sample": lambda i: model.sample(3, seed=i), "encode": lambda i: model.encode(x[i:i + 2], seed=i).z}
    serial = {job: run[job[0]](job[1]) for job in set(jobs)}
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda job: run[job[0]](job[1]), jobs))
    for job, out in zip(jobs, parallel):
        assert np.array_equal(out, serial[job]), job


def test_interpolate_between_latents_and_images(model):
    a, b = edgevae.standard_normal(1, (D,)), edgevae.standard_normal(2, (D,))
    for method in ("lerp", "slerp"):
        strip = model.interpolate(a, b, steps=5, method=method)
        assert strip.shape == (5, *SHAPE)
        assert np.array_equal(strip[0], model.decode(a[None])[0])
        assert np.array_equal(strip[-1], model.decode(b[None])[0])
    images = model.sample(2, seed=3)
    strip = model.interpolate(images[0], images[1], steps=4)
    np.testing.assert_array_equal(strip[0], model.reconstruct(images[:1])[0])
    with pytest.raises(EdgeVAEError, match=r"expected a latent of shape \(4,\) or an image"):
        model.interpolate(np.zeros(3), b)
    with pytest.raises(EdgeVAEError, match="method must be one of lerp, slerp"):
        model.interpolate(a, b, method="cubic")


def test_slerp_follows_the_sphere():
    from edgevae._latent import interpolate

    a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    mid_lerp, mid_slerp = interpolate(a, b, 3, "lerp")[1], interpolate(a, b, 3, "slerp")[1]
    np.testing.assert_allclose(mid_lerp, [1.5, 1.5], rtol=1e-6)
    np.testing.assert_allclose(mid_slerp, [3 / np.sqrt(2), 3 / np.sqrt(2)], rtol=1e-6)  # norm stays 3
    np.testing.assert_allclose(interpolate(a, 2 * a, 3, "slerp")[1], 1.5 * a, rtol=1e-6)  # parallel: lerp


def test_traverse_changes_one_dimension(model):
    values = np.linspace(-2, 2, 5)
    rows = model.traverse(1, values=values)
    z = np.zeros((5, D), np.float32)
    z[:, 1] = values
    assert np.array_equal(rows, model.decode(z))
    assert model.traverse(0, steps=7).shape == (7, *SHAPE)
    with pytest.raises(EdgeVAEError, match=r"dim must be an int in \[0, 3\], got 4"):
        model.traverse(4)


def test_manifold_grid(export_dir_2d, model):
    m2 = edgevae.load(export_dir_2d)
    grid = m2.manifold(5)
    assert grid.shape == (25, *SHAPE)
    from edgevae._latent import manifold

    z = manifold(5)
    assert np.allclose(z[0], [z[:, 0].min(), z[:, 1].max()])  # top-left: smallest z1, largest z2
    assert np.array_equal(grid, m2.decode(z))
    with pytest.raises(EdgeVAEError, match=r"needs a 2-D latent, this model's latent is \(4,\)"):
        model.manifold()


def test_cold_start_is_fast_and_light(export_dir, tmp_path):
    """A fresh process imports the runtime, loads the model and writes a 64-image PNG."""
    # Peak memory from VmHWM: ru_maxrss would carry over the (torch-loaded) parent's peak across fork.
    code = ("import re, sys, time; t = time.perf_counter(); import edgevae; "
            "edgevae.save_grid(edgevae.load(sys.argv[1]).sample(64, seed=0), sys.argv[2]); "
            "print(time.perf_counter() - t, re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])")
    out = subprocess.run([sys.executable, "-c", code, str(export_dir), str(tmp_path / "g.png")], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    seconds, peak_kb = out.stdout.split()
    # Measured ~0.25 s and ~75 MB here; `import torch` alone takes ~1.7 s and ~220 MB. The bounds leave
    # room for a loaded CI machine while still failing if torch (or anything that heavy) sneaks in.
    assert float(seconds) < 2.0
    assert int(peak_kb) < 150_000


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
    (lambda m: m.decode([[1.0, 2.0], [3.0]]), "z must be an array"),
    (lambda m: m.traverse(0, steps=-1), r"steps must be an int in \[1, 10000\], got -1"),
    (lambda m: m.traverse(0, steps=2.5), "steps must be an int"),
])
def test_bad_input_raises_edgevae_error_with_expected_and_actual(model, call, message):
    with pytest.raises(EdgeVAEError, match=message):
        call(model)


def test_unwritable_png_path(model, tmp_path):
    with pytest.raises(EdgeVAEError, match="cannot write"):
        edgevae.save_grid(model.sample(1, seed=0), tmp_path / "no" / "such" / "dir" / "x.png")


def _copy(export_dir, tmp_path, name="copy"):
    return shutil.copytree(export_dir, tmp_path / name)


def test_tampered_graph_is_refused(export_dir, tmp_path):
    d = _copy(export_dir, tmp_path)
    data = bytearray((d / S.DECODER_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / S.DECODER_FILE).write_bytes(bytes(data))
    with pytest.raises(EdgeVAEError, match="does not match the manifest"):
        edgevae.load(d)


def test_missing_graph_and_missing_manifest_are_refused(export_dir, tmp_path):
    d = _copy(export_dir, tmp_path)
    (d / S.ENCODER_FILE).unlink()
    with pytest.raises(EdgeVAEError, match="encoder.onnx is missing"):
        edgevae.load(d)
    (d / S.MANIFEST).unlink()
    with pytest.raises(EdgeVAEError, match="manifest.json is missing"):
        edgevae.load(d)
    with pytest.raises(EdgeVAEError, match="no such directory"):
        edgevae.load(tmp_path / "nowhere")


def test_graphs_from_different_exports_are_refused(export_dir, run_dir, tmp_path):
    from edgevae.export.build import export

    other = export(run_dir, tmp_path / "other", log=lambda *_: None)
    d = _copy(export_dir, tmp_path)
    shutil.copy(other / S.DECODER_FILE, d / S.DECODER_FILE)  # a decoder from another export ...
    manifest = json.loads((d / S.MANIFEST).read_text())  # ... with its hash "fixed up" to pass the check
    manifest["files"][S.DECODER_FILE]["sha256"] = hashlib.sha256((d / S.DECODER_FILE).read_bytes()).hexdigest()
    (d / S.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(EdgeVAEError, match="different exports"):
        edgevae.load(d)


def test_spec_from_a_future_schema_is_refused():
    spec = {k: 1 for k in S.REQUIRED_FIELDS} | {"schema_version": S.SCHEMA_VERSION + 1}
    with pytest.raises(EdgeVAEError, match=f"schema_version {S.SCHEMA_VERSION + 1} is not supported"):
        S.loads(json.dumps(spec), "encoder.onnx")
