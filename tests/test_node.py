"""The Node.js host (examples/node): its noise equals edgevae.noise bit for bit, its PNG equals the Python runtime's.

Needs node, npm and `ONNXRUNTIME_NODE_INSTALL=skip npm ci` in examples/node; skips without them on a
developer machine and fails under CI=true (.ci/run installs them).
"""
import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT, require_tools, skip_or_fail
from PIL import Image
from test_noise import PHILOX_KAT, REFERENCE

import edgevae

NODE_DIR = ROOT / "examples" / "node"


@pytest.fixture(scope="module")
def node() -> str:
    require_tools("node", "npm", hint="apt-get install nodejs npm")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        skip_or_fail("examples/node has no node_modules: cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci")
    return shutil.which("node")


def run_js(node: str, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run an ES module snippet in examples/node with `args` as process.argv[1:]."""
    return subprocess.run([node, "--input-type=module", "-e", code, "--", *args], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=60)


def js_noise_bits(node: str, seed: int, count: int) -> np.ndarray:
    code = ('import { standardNormal, float32Bits } from "../js/noise.mjs";'
            'const [seed, count] = process.argv.slice(1);'
            'console.log(JSON.stringify(float32Bits(standardNormal(BigInt(seed), Number(count)))));')
    result = run_js(node, code, str(seed), str(count))
    assert result.returncode == 0, result.stderr
    return np.array(json.loads(result.stdout), dtype=np.uint32)


def test_js_philox_known_answers(node):
    code = ('import { philox4x32 } from "../js/noise.mjs";'
            'const cases = JSON.parse(process.argv[1]);'
            'console.log(JSON.stringify(cases.map(([c, k]) => philox4x32(c, k))));')
    result = run_js(node, code, json.dumps([[list(c), list(k)] for c, k, _ in PHILOX_KAT]))
    assert result.returncode == 0, result.stderr
    assert [tuple(w) for w in json.loads(result.stdout)] == [expected for _, _, expected in PHILOX_KAT]


@pytest.mark.parametrize("seed,shape,bits", REFERENCE)
def test_js_noise_reference_vectors(node, seed, shape, bits):
    assert js_noise_bits(node, seed, int(np.prod(shape))).tolist() == bits  # exact float32 bit patterns


def test_js_noise_matches_numpy_on_many_draws(node):
    # V8's Math.log/cos/sin and numpy's libm may disagree in the last float64 bit, which survives the
    # rounding to float32 only rarely (README "The noise generator"): allow one float32 ulp, report how often.
    count, differing = 50_000, 0
    for seed in (1, 2**32, 2**63 + 12345):
        js = js_noise_bits(node, seed, count).view(np.float32)
        py = edgevae.standard_normal(seed, (count,))
        np.testing.assert_array_max_ulp(js, py, maxulp=1)
        differing += int((js.view(np.uint32) != py.view(np.uint32)).sum())
    print(f"JS noise vs numpy: {differing} of {3 * count} float32 values differ (by 1 ulp)")
    assert differing <= 3 * count // 10_000  # "rare": at most 1 in 10,000


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.mark.parametrize("n,seed,temperature", [(64, 0, 1.0), (10, 2**64 - 1, 0.7)])
def test_node_grid_equals_python_grid(node, export_dir, tmp_path, n, seed, temperature):
    js_png, py_png = tmp_path / "node.png", tmp_path / "python.png"
    result = subprocess.run([node, "sample.mjs", str(export_dir), "--n", str(n), "--seed", str(seed),
                             "--temperature", str(temperature), "--out", str(js_png)],
                            cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"wrote {js_png} ({n} samples, seed {seed}" in result.stdout
    edgevae.save_grid(edgevae.load(export_dir).sample(n, seed=seed, temperature=temperature), py_png)
    js, py = _pixels(js_png), _pixels(py_png)
    assert js.shape == py.shape and js.dtype == py.dtype == np.uint8  # same layout: nrow, padding, grey
    diff = np.abs(js.astype(int) - py.astype(int))
    print(f"node vs python grid (n={n}, seed={seed}, T={temperature}): {int((diff > 0).sum())} of {diff.size} "
          f"pixels differ, max {int(diff.max())} grey levels")
    # Both hosts run onnxruntime's CPU kernels on the same float32 z, so x_hat agrees to ~1e-7; a pixel can
    # still flip by one level where x * 255 straddles a rounding boundary. Allow one level on at most
    # 1 pixel in 1,000 (export's own torch-vs-onnxruntime check measures about 1 in 200,000).
    assert diff.max() <= 1
    assert (diff > 0).sum() <= diff.size // 1000
    assert py.std() > 10  # a real picture, not a blank grid that would trivially match


def test_node_conditional_grid_equals_python_grid(node, kind_export, tmp_path):
    _, export = kind_export("conditional")
    classes = edgevae.load(export).classes
    js_png, py_png = tmp_path / "node.png", tmp_path / "python.png"
    result = subprocess.run([node, "sample.mjs", str(export), "--n", "16", "--seed", "3", "--label", classes[1],
                             "--out", str(js_png)], cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    edgevae.save_grid(edgevae.load(export).sample(16, seed=3, labels=1), py_png)
    diff = np.abs(_pixels(js_png).astype(int) - _pixels(py_png).astype(int))
    assert diff.max() <= 1 and (diff > 0).sum() <= diff.size // 1000  # as above
    result = subprocess.run([node, "sample.mjs", str(export), "--out", str(js_png)], cwd=NODE_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "this model is conditional" in result.stderr, result.stderr


def test_node_samples_through_a_fitted_mixture_as_python_does(node, kind_export, tmp_path):
    # the colour default's graphs (a mixture of Gaussians folded in: comparisons, a one-hot's MatMuls, the stretch's
    # Log) in onnxruntime-node give Python's grid from the same seed
    _, export = kind_export("resnet-default")
    assert edgevae.load(export).spec["prior_fit"]["kind"] == "gaussian-mixture"
    diff, py_png = _node_grid_against_python(node, export, 16, 5, tmp_path)
    assert diff.max() <= 1 and (diff > 0).sum() <= diff.size // 1000  # as above
    assert _pixels(py_png).std() > 10


def _node_grid_against_python(node: str, export, n: int, seed: int, tmp_path):
    """(|node's grid - Python's| per pixel, Python's PNG) for n samples of `seed` drawn by examples/node/sample.mjs
    and by the runtime."""
    js_png, py_png = tmp_path / "node.png", tmp_path / "python.png"
    result = subprocess.run([node, "sample.mjs", str(export), "--n", str(n), "--seed", str(seed), "--out",
                             str(js_png)], cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    edgevae.save_grid(edgevae.load(export).sample(n, seed=seed), py_png)
    return np.abs(_pixels(js_png).astype(int) - _pixels(py_png).astype(int)), py_png


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_the_web_pages_interpolation_holds_a_mixtures_first_number_as_python_does(node, method):
    # examples/web/latent.mjs is the page's path; run_js runs in examples/node, so the import climbs to it
    from edgevae._latent import interpolate

    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    code = ('import { interpolate, heldNumbers } from "../web/latent.mjs";'
            'const [a, b, method] = [JSON.parse(process.argv[1]), JSON.parse(process.argv[2]), process.argv[3]];'
            'const held = heldNumbers({ prior_fit: { kind: "gaussian-mixture" } });'
            'console.log(JSON.stringify(Array.from(interpolate(Float32Array.from(a), Float32Array.from(b), 7, method,'
            ' held))));')
    result = run_js(node, code, json.dumps(a.tolist()), json.dumps(b.tolist()), method)
    assert result.returncode == 0, result.stderr
    js = np.array(json.loads(result.stdout), dtype=np.float32).reshape(7, 6)
    expected = interpolate(a, b, 7, method, held=(0,))
    assert np.array_equal(js[:, 0], [a[0]] * 3 + [b[0]] * 4)  # a's component, then b's from t = 1/2 on
    np.testing.assert_allclose(js, expected, rtol=0, atol=1e-6)  # float64 paths in both, rounded to float32


def test_node_refuses_tampered_and_mismatched_exports(node, export_dir, export_dir_2d, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(export_dir, tampered)
    data = bytearray((tampered / "decoder.onnx").read_bytes())
    data[-1] ^= 1
    (tampered / "decoder.onnx").write_bytes(bytes(data))
    result = subprocess.run([node, "sample.mjs", str(tampered), "--out", str(tmp_path / "t.png")], cwd=NODE_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "does not match the manifest" in result.stderr, result.stderr

    # A decoder from another export, with the manifest's hash updated: only pair_id can tell.
    mixed = tmp_path / "mixed"
    shutil.copytree(export_dir, mixed)
    shutil.copy(export_dir_2d / "decoder.onnx", mixed / "decoder.onnx")
    manifest = json.loads((mixed / "manifest.json").read_text())
    manifest["files"]["decoder.onnx"]["sha256"] = json.loads(
        (export_dir_2d / "manifest.json").read_text())["files"]["decoder.onnx"]["sha256"]
    (mixed / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run([node, "sample.mjs", str(mixed), "--out", str(tmp_path / "m.png")], cwd=NODE_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "different exports (pair_id" in result.stderr, result.stderr
    with pytest.raises(edgevae.EdgeVAEError, match="different exports"):  # the Python runtime agrees
        edgevae.load(mixed)


def test_missing_tool_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs no-such-tool-x on PATH"):
        require_tools("no-such-tool-x", hint="nothing to install")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_tools("no-such-tool-x", hint="nothing to install")


@pytest.fixture(scope="module")
def spatial_exports(tmp_path_factory):
    """A hand-written conv VAE with a spatial latent (4x8x8), and the same exported without a prior."""
    import sys

    from edgevae.export import export_vae

    sys.path.insert(0, str(ROOT / "tests" / "byo"))
    import user_vaes

    base = tmp_path_factory.mktemp("spatial-node")
    quiet = dict(log=lambda *_: None)
    return (export_vae(user_vaes.spatial(), (3, 32, 32), base / "prior", **quiet),
            export_vae(user_vaes.spatial(), (3, 32, 32), base / "none", prior=None, prior_note="told so", **quiet))


def test_node_spatial_latent_grid_equals_python_grid(node, spatial_exports, tmp_path):
    export = spatial_exports[0]
    assert edgevae.load(export).latent_shape == (4, 8, 8)
    diff, py_png = _node_grid_against_python(node, export, 9, 5, tmp_path)
    # eps (9, 4, 8, 8) row-major from one Philox stream in both hosts; one level where x * 255 straddles a rounding
    assert diff.max() <= 1 and (diff > 0).sum() <= diff.size // 1000
    assert _pixels(py_png).std() > 10


def test_node_refuses_to_sample_without_a_prior(node, spatial_exports, tmp_path):
    result = subprocess.run([node, "sample.mjs", str(spatial_exports[1]), "--out", str(tmp_path / "s.png")],
                            cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no prior to sample from" in result.stderr and "told so" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "s.png").exists()
