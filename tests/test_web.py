"""The browser page (examples/web) in real headless Chromium: the Python runtime's pixels, and its errors on one line.

Needs /usr/bin/chromium (Debian: apt-get install chromium), node and `PUPPETEER_SKIP_DOWNLOAD=1 npm ci` in
examples/web; skips without them on a developer machine and fails under CI=true (.ci/run installs them).
examples/web/serve.py serves the page and a directory of exports; examples/web/headless.mjs (puppeteer-core)
drives Chromium: each test copies the export it needs into that directory and opens the page on it.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, require_tools, skip_or_fail
from PIL import Image
from test_noise import REFERENCE

import edgevae

WEB_DIR = ROOT / "examples" / "web"
CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 120  # seconds for one browser command; a first page load compiles 14 MB of wasm


# -- the server, the browser ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(directory served at /export/, the server's origin)."""
    require_tools("node", hint="apt-get install nodejs npm")
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"needs {CHROMIUM} (apt-get install chromium)")
    for package in ("onnxruntime-web", "puppeteer-core"):
        if not (WEB_DIR / "node_modules" / package).is_dir():
            skip_or_fail("examples/web has no node_modules: cd examples/web && PUPPETEER_SKIP_DOWNLOAD=1 npm ci")
    root = tmp_path_factory.mktemp("site")
    log = open(root.parent / "serve.log", "w")
    server = subprocess.Popen([sys.executable, str(WEB_DIR / "serve.py"), str(root), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        url = server.stdout.readline().strip()  # the first line is the page's URL
        assert url.startswith("http://127.0.0.1:") and url.endswith("/web/?export=/export/"), url
        yield root, url.split("/web/")[0]
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()
        log.close()


class Browser:
    """headless.mjs: one JSON command per line in, one JSON answer per line out."""

    def __init__(self):
        env = {**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"}
        self.process = subprocess.Popen(["node", "headless.mjs", "--browser", CHROMIUM], cwd=WEB_DIR, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, cmd: str, **args):
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        assert line, f"headless.mjs gave no answer to {cmd} (exit code {self.process.poll()})"
        reply = json.loads(line)
        if not reply["ok"]:
            raise AssertionError(f"{cmd} failed: {reply['error']}; page log: {self.page_log()}")
        return reply["value"]

    def page_log(self) -> list[str]:
        self.process.stdin.write('{"cmd": "log"}\n')
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["value"]

    def close(self):
        self.process.stdin.close()  # headless.mjs closes the browser at the end of its input
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


@pytest.fixture(scope="module")
def browser(site):
    b = Browser()
    yield b
    b.close()


def open_page(browser, site, name: str, **params) -> dict:
    """Open the page on the export `name` of the site; returns {state, status, lines}."""
    query = "&".join(f"{k}={v}" for k, v in {"export": f"/export/{name}/", **params}.items())
    browser("goto", url=f"{site[1]}/web/?{query}")
    return page_state(browser)


def page_state(browser) -> dict:
    return browser("eval", js="""(() => {
        const status = document.getElementById("status");
        const line = parseFloat(getComputedStyle(status).lineHeight);
        return { state: document.body.dataset.state, status: status.textContent,
                 lines: Math.round(status.getBoundingClientRect().height / line) };
    })()""")


def settle(browser, canvas: str, **shown):
    """Wait until the page is idle and `canvas` shows a picture with these parameters."""
    checks = " && ".join(f"JSON.stringify(s[{json.dumps(k)}]) === JSON.stringify({json.dumps(v)})"
                         for k, v in shown.items()) or "true"
    browser("wait", js=f"""(() => {{
        const s = JSON.parse(document.getElementById("{canvas}").dataset.shown ?? "null");
        return document.body.dataset.state !== "busy" && s !== null && {checks};
    }})()""")
    state = page_state(browser)
    assert state["state"] == "ready", state


def canvas_pixels(browser, canvas: str) -> np.ndarray:
    """The canvas's backing store (its own pixels, not the enlarged view) as uint8 (H, W, 4) RGBA."""
    value = browser("eval", js=f"""(() => {{
        const c = document.getElementById("{canvas}");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let s = "";
        for (let i = 0; i < d.length; i += 32768) s += String.fromCharCode(...d.subarray(i, i + 32768));
        return {{ width: c.width, height: c.height, rgba: btoa(s) }};
    }})()""")
    return np.frombuffer(base64.b64decode(value["rgba"]), np.uint8).reshape(value["height"], value["width"], 4)


def compare(canvas: np.ndarray, images: np.ndarray, what: str, nrow: int | None = None) -> int:
    """Assert an opaque canvas shows edgevae.make_grid(images), pixels by edgevae.to_uint8; returns how many differ."""
    expected = edgevae.make_grid(images, nrow).astype(int)  # (H, W, C), C = 1 or 3
    assert canvas.shape[:2] == expected.shape[:2], (canvas.shape, expected.shape)  # same layout: nrow, padding
    assert (canvas[..., 3] == 255).all()  # opaque
    shown = canvas[..., :3].astype(int) if expected.shape[2] == 3 else canvas[..., :1].astype(int)
    if expected.shape[2] == 1:
        assert (canvas[..., 0] == canvas[..., 1]).all() and (canvas[..., 0] == canvas[..., 2]).all()  # grey
    diff = np.abs(shown - expected)
    differing = int((diff > 0).sum())
    print(f"browser vs python, {what}: {differing} of {diff.size} pixels differ, max {int(diff.max())} grey levels")
    # onnxruntime-web runs the same graph on the same float32 z, but with its WASM (SIMD128) float kernels,
    # not the native AVX ones: the sums are ordered differently, so x_hat may differ by ~1e-7 and a pixel
    # whose x * 255 sits on a rounding boundary can flip by one level. Allow that: one level, at most
    # 1 pixel in 1,000. Measured: 0 on the tiny test models; 1-2 of 232,324 pixels in 256-image grids of
    # the demo's 512-256 MLP and of a conv model, four seeds each.
    assert diff.max() <= 1
    assert differing <= diff.size // 1000
    assert expected.std() > 10  # a real picture, not a blank grid that would trivially match
    return differing


# -- exports made for the tests --------------------------------------------------------------------------------------

def publish(site, name: str, export: Path) -> Path:
    """Copy an export directory into the served site as /export/NAME/."""
    target = site[0] / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(export, target)
    return target


def rewrite_specs(directory: Path, change) -> None:
    """Apply change(spec) to the edgevae.spec of every graph in `directory` and update the manifest's hashes."""
    import onnx

    manifest = json.loads((directory / "manifest.json").read_text())
    for name in manifest["files"]:
        model = onnx.load(str(directory / name))
        for prop in model.metadata_props:
            if prop.key == "edgevae.spec":
                prop.value = json.dumps(change(json.loads(prop.value)), sort_keys=True)
        onnx.save(model, str(directory / name))
        data = (directory / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))


def schema2(spec: dict, **fields) -> dict:
    """A schema-1 spec written as schema 2 (docs/design.md): latent_shape [D], image_mode, prior."""
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[spec["image_shape"][0]]
    return {**spec, "schema_version": 2, "latent_shape": [spec["latent_dim"]], "image_mode": mode,
            "prior": "standard_normal", **fields}


def spatial_rgba_export(directory: Path, latent_shape=(2, 2, 2), image_shape=(4, 6, 6)) -> Path:
    """A schema-2 export with a spatial latent [C, h, w] and RGBA images: linear layers in plain ONNX."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    d, pixels = int(np.prod(latent_shape)), int(np.prod(image_shape))
    pair_id = "5a71a1" + "0" * 26
    spec = {"schema_version": 2, "variant": "fp32", "pair_id": pair_id, "model": "vae",
            "latent_shape": list(latent_shape), "latent_dim": d, "image_shape": list(image_shape),
            "image_mode": "RGBA", "pixel_range": [0.0, 1.0], "prior": "standard_normal", "classes": None,
            "likelihood": "bernoulli", "noise": {"algorithm": "philox4x32-10/box-muller", "version": 1}}
    batch = "batch"

    def graph(role, nodes, inputs, outputs, weights):
        g = helper.make_graph(nodes, role, inputs, outputs, [numpy_helper.from_array(w, k) for k, w in weights.items()])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)  # as exports
        helper.set_model_props(model, {"edgevae.spec": json.dumps({**spec, "role": role})})
        onnx.checker.check_model(model)
        return model

    tensor = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, *shape])  # noqa: E731
    decoder = graph("decoder", [
        helper.make_node("Reshape", ["z", "flat"], ["zf"]),
        helper.make_node("Gemm", ["zf", "w", "b"], ["h"]),
        helper.make_node("Sigmoid", ["h"], ["s"]),
        helper.make_node("Reshape", ["s", "image"], ["x_hat"]),
    ], [tensor("z", latent_shape)], [tensor("x_hat", image_shape)], {
        "flat": np.array([-1, d], np.int64), "image": np.array([-1, *image_shape], np.int64),
        "w": rng.normal(0, 1.5, (d, pixels)).astype(np.float32), "b": rng.normal(0, 1, pixels).astype(np.float32)})
    encoder = graph("encoder", [
        helper.make_node("Reshape", ["x", "flat"], ["xf"]),
        helper.make_node("Gemm", ["xf", "wm", "bm"], ["mf"]),
        helper.make_node("Reshape", ["mf", "latent"], ["mu"]),
        helper.make_node("Mul", ["mu", "zero"], ["logvar"]),
        helper.make_node("Add", ["mu", "eps"], ["z"]),  # std exp(0.5 * 0) = 1
    ], [tensor("x", image_shape), tensor("eps", latent_shape)],
        [tensor("z", latent_shape), tensor("mu", latent_shape), tensor("logvar", latent_shape)], {
        "flat": np.array([-1, pixels], np.int64), "latent": np.array([-1, *latent_shape], np.int64),
        "wm": rng.normal(0, 0.1, (pixels, d)).astype(np.float32), "bm": np.zeros(d, np.float32),
        "zero": np.zeros(1, np.float32)})
    directory.mkdir(parents=True)
    files = {}
    for name, model in (("encoder.onnx", encoder), ("decoder.onnx", decoder)):
        data = model.SerializeToString()
        (directory / name).write_bytes(data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (directory / "manifest.json").write_text(json.dumps({"schema_version": 2, "pair_id": pair_id, "files": files,
        "variants": {"fp32": {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}}}))
    return directory


# -- the tests ---------------------------------------------------------------------------------------------------------

def test_page_draws_the_python_runtimes_pixels(browser, site, export_dir, tmp_path):
    publish(site, "tiny", export_dir)
    model = edgevae.load(export_dir)
    state = open_page(browser, site, "tiny", n=64, seed=0)
    assert state["state"] == "ready" and "latent [4]" in state["status"], state
    settle(browser, "grid", seed="0", n=64)
    counts = {0: compare(canvas_pixels(browser, "grid"), model.sample(64, seed=0), "seed 0, n 64")}

    # The second seed, typed like a user (and Enter), at another temperature and a grid that is not square.
    big = 2**64 - 1
    browser("type", selector="#n", text="10")
    browser("type", selector="#temperature", text="0.7")
    browser("type", selector="#seed", text=str(big), enter=True)
    settle(browser, "grid", seed=str(big), n=10, temperature=0.7)
    counts[big] = compare(canvas_pixels(browser, "grid"), model.sample(10, seed=big, temperature=0.7),
                          f"seed {big}, n 10, T 0.7")
    print(f"differing pixels per seed: {counts}")

    # The sliders edit the first image's latent: temperature * eps[0]; z0 set to 1.5.
    z = edgevae.standard_normal(big, (1, 4))[0] * np.float32(0.7)
    settle(browser, "image", z=[float(v) for v in z])
    browser("eval", js="""(() => { const s = document.getElementById("slider0");
        s.value = "1.5"; s.dispatchEvent(new Event("input")); })()""")
    z[0] = 1.5
    settle(browser, "image", z=[float(v) for v in z])
    compare(canvas_pixels(browser, "image"), model.decode(z[None]), "slider z0 = 1.5")

    # The strip: lerp between the first samples of two seeds, as model.interpolate computes it.
    browser("type", selector="#seed-a", text="5")
    browser("type", selector="#seed-b", text="6", enter=True)
    settle(browser, "strip", a="5", b="6", steps=10, method="lerp")
    a, b = (edgevae.standard_normal(s, (1, 4))[0] * np.float32(0.7) for s in (5, 6))
    compare(canvas_pixels(browser, "strip"), model.interpolate(a, b, steps=10), "lerp strip 5 -> 6", nrow=10)

    # What a person sees: the page's screenshot shows the grid, not an empty box.
    shot = tmp_path / "page.png"
    browser("screenshot", path=str(shot))
    box = browser("eval", js="""(() => { const r = document.getElementById("grid").getBoundingClientRect();
        return [r.left, r.top, r.right, r.bottom].map(Math.round); })()""")
    with Image.open(shot) as im:
        grid = np.asarray(im.convert("L").crop(tuple(box)), dtype=float)
    assert grid.shape[0] > 50 and grid.shape[1] > 50 and grid.std() > 10, (box, grid.std())
    # No console error, page error or failed request on the way, under serve.py's Content-Security-Policy.
    # (Warnings may come from the test's own getImageData calls.)
    assert [line for line in browser.page_log() if not line.startswith("console.warn")] == []

    # Bad input is refused in one line, the picture left as it was.
    browser("type", selector="#seed", text="-1", enter=True)
    browser("wait", js='document.body.dataset.state === "error"')
    state = page_state(browser)
    assert state["status"] == 'seed must be an integer in [0, 2**64), got "-1"' and state["lines"] == 1, state


def test_page_reads_schema_2_and_refuses_sampling_without_a_prior(browser, site, export_dir):
    model = edgevae.load(export_dir)
    rewrite_specs(publish(site, "schema2", export_dir), schema2)
    state = open_page(browser, site, "schema2", n=16, seed=7)
    assert state["state"] == "ready" and "schema 2" in state["status"], state
    settle(browser, "grid", seed="7", n=16)
    compare(canvas_pixels(browser, "grid"), model.sample(16, seed=7), "schema 2, seed 7")

    note = "an autoencoder's codes do not follow N(0, I)"
    rewrite_specs(publish(site, "noprior", export_dir), lambda s: schema2(s, prior=None, prior_note=note))
    state = open_page(browser, site, "noprior")
    assert state["state"] == "error" and state["lines"] == 1, state
    assert state["status"] == f"cannot sample: this model has no prior to sample from (spec prior null: {note})"
    assert browser("eval", js='document.getElementById("grid").width') == 1  # nothing drawn


def test_page_draws_spatial_latents_and_transparency(browser, site, tmp_path):
    import onnxruntime as ort

    export = spatial_rgba_export(tmp_path / "rgba")
    publish(site, "rgba", export)
    state = open_page(browser, site, "rgba", n=9, seed=11)
    assert state["state"] == "ready" and "latent [2, 2, 2]" in state["status"] and "RGBA" in state["status"], state
    settle(browser, "grid", seed="11", n=9)
    # eps for n images of latent [C, h, w] is standard_normal(seed, (n, C, h, w)): row-major, one stream.
    eps = edgevae.standard_normal(11, (9, 2, 2, 2))
    x_hat = ort.InferenceSession(str(export / "decoder.onnx")).run(None, {"z": eps})[0]
    expected = np.zeros((3 * 8 + 2, 3 * 8 + 2, 4), np.uint8)  # make_grid's layout; padding transparent
    for i, image in enumerate(edgevae.to_uint8(x_hat).transpose(0, 2, 3, 1)):
        top, left = 2 + (i // 3) * 8, 2 + (i % 3) * 8
        expected[top:top + 6, left:left + 6] = image
    canvas = canvas_pixels(browser, "grid").astype(int)
    assert canvas.shape == expected.shape
    alpha = expected[..., 3].astype(int)
    assert alpha[2:8, 2:8].std() > 10 and alpha.min() < 128  # translucent pixels: drawn, not flattened
    assert np.abs(canvas[..., 3] - alpha).max() <= 1
    # A 2-D canvas stores colour premultiplied by alpha, p = round(c * a / 255), and getImageData returns
    # round(p * 255 / a): a translucent pixel's colour comes back only as exact as c * a / 255 (a fully
    # transparent one as 0). Compare premultiplied values: two roundings of half a level each at most.
    premultiplied = lambda p: p[..., :3] * p[..., 3:] / 255.0  # noqa: E731
    error = np.abs(premultiplied(canvas) - premultiplied(expected.astype(int)))
    print(f"browser vs python, RGBA: alpha max diff {np.abs(canvas[..., 3] - alpha).max()}, colour premultiplied by "
          f"alpha max diff {error.max():.2f}")
    assert error.max() <= 1 + 1e-9
    assert browser("eval", js='document.getElementById("grid").classList.contains("alpha") && '
                              'getComputedStyle(document.getElementById("grid")).backgroundImage.includes("gradient")')
    slider = browser("eval", js='document.querySelector("#sliders label").textContent')
    assert slider.startswith("z[0,0,0]"), slider  # sliders edit the first flattened elements


def test_page_conditional_class_picker(browser, site, kind_export):
    _, export = kind_export("conditional")
    model = edgevae.load(export)
    publish(site, "conditional", export)
    state = open_page(browser, site, "conditional", n=16, seed=3, label=1)
    assert state["state"] == "ready", state
    options = browser("eval", js='[...document.querySelectorAll("#class option")].map((o) => o.textContent)')
    assert options == model.classes
    settle(browser, "grid", seed="3", label=1)
    compare(canvas_pixels(browser, "grid"), model.sample(16, seed=3, labels=1), f"class {model.classes[1]}")
    browser("select", selector="#class", value="2")
    settle(browser, "grid", seed="3", label=2)
    compare(canvas_pixels(browser, "grid"), model.sample(16, seed=3, labels=2), f"class {model.classes[2]}")


@pytest.mark.parametrize("case,message", [
    ("tampered", "does not match the manifest"),
    ("mixed", "different exports (pair_id"),
    ("schema99", "spec schema_version 99 is not supported"),
    ("missing", "not an export directory (manifest.json: HTTP 404"),
])
def test_page_shows_bad_exports_in_one_line(browser, site, export_dir, export_dir_2d, case, message):
    target = site[0] / case
    if case != "missing":
        publish(site, case, export_dir)
    if case == "tampered":
        data = bytearray((target / "decoder.onnx").read_bytes())
        data[-1] ^= 1
        (target / "decoder.onnx").write_bytes(bytes(data))
    elif case == "mixed":  # a decoder from another export, the manifest's hash updated: only pair_id can tell
        shutil.copy(export_dir_2d / "decoder.onnx", target / "decoder.onnx")
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["files"]["decoder.onnx"] = json.loads((export_dir_2d / "manifest.json").read_text())["files"][
            "decoder.onnx"]
        (target / "manifest.json").write_text(json.dumps(manifest))
    elif case == "schema99":
        rewrite_specs(target, lambda s: {**s, "schema_version": 99})
    state = open_page(browser, site, case)
    assert state["state"] == "error" and message in state["status"], state
    assert "\n" not in state["status"] and state["lines"] == 1, state  # one line on the page
    assert browser("eval", js='document.getElementById("grid").width') == 1  # nothing drawn


def test_page_pins_the_manifest_digest(browser, site, export_dir):
    publish(site, "pinned", export_dir)
    digest = hashlib.sha256((export_dir / "manifest.json").read_bytes()).hexdigest()
    assert open_page(browser, site, "pinned", manifest_sha256=digest)["state"] == "ready"
    state = open_page(browser, site, "pinned", manifest_sha256="0" * 64)
    assert state["state"] == "error" and state["lines"] == 1, state
    assert "manifest.json: sha256 " in state["status"] and "is not the pinned 000000000000..." in state["status"]


class StaticHandler(SimpleHTTPRequestHandler):
    """Any static file server: the folder bundle.py writes needs nothing else (serve.py is not shipped)."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm"}

    def log_message(self, format, *args):
        pass


def test_bundle_is_complete_and_pinned(browser, site, export_dir, tmp_path):
    folder = tmp_path / "app"
    result = subprocess.run([sys.executable, str(WEB_DIR / "bundle.py"), str(export_dir), "--out", str(folder)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "pinned to manifest sha256" in result.stdout, result.stderr
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(StaticHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = f"http://127.0.0.1:{server.server_address[1]}/web/index.html"
        browser("goto", url=page)  # no query: the bundled export at /export/, 64 images, seed 0
        settle(browser, "grid", seed="0", n=64)
        compare(canvas_pixels(browser, "grid"), edgevae.load(export_dir).sample(64, seed=0), "bundle, seed 0")
        # Another manifest (here: the same JSON, one more byte) is not the export the page was bundled with.
        manifest = folder / "export" / "manifest.json"
        manifest.write_bytes(manifest.read_bytes() + b"\n")
        browser("goto", url=page)
        state = page_state(browser)
        assert state["state"] == "error" and "is not the pinned" in state["status"], state
        # A shipped folder that lost a file says so in one line too: onnxruntime-web's wasm, one of the modules.
        manifest.write_bytes(manifest.read_bytes()[:-1])
        (folder / "web" / "node_modules" / "onnxruntime-web" / "dist" / "ort-wasm-simd-threaded.wasm").unlink()
        browser("goto", url=page)
        state = page_state(browser)
        assert state["state"] == "error" and state["lines"] == 1, state
        assert state["status"].startswith("onnxruntime-web's WASM backend did not start"), state
        (folder / "js" / "grid.mjs").unlink()
        browser("goto", url=page)
        state = page_state(browser)
        assert state["state"] == "error" and state["lines"] == 1, state
        assert state["status"].startswith("the page's code did not load"), state
    finally:
        server.shutdown()
        server.server_close()
    result = subprocess.run([sys.executable, str(WEB_DIR / "bundle.py"), str(export_dir), "--out", str(folder)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip().endswith("exists and is not empty"), result.stderr


def test_browser_noise_reference_vectors(browser, site):
    browser("goto", url=f"{site[1]}/web/?export=/export/none/")  # any page of the origin
    for seed, shape, bits in REFERENCE:
        got = browser("eval", js=f"""import("/js/noise.mjs").then((m) =>
            m.float32Bits(m.standardNormal({seed}n, {int(np.prod(shape))})))""")
        assert got == bits, seed  # Chromium's V8 draws numpy's float32 bits


def test_server_routes_and_types(site):
    origin = site[1]

    def get(path):
        try:
            with urllib.request.urlopen(origin + path, timeout=10) as r:
                return r.status, r.headers.get_content_type()
        except urllib.error.HTTPError as e:
            return e.code, None

    assert get("/web/app.mjs") == (200, "text/javascript")
    with urllib.request.urlopen(origin + "/web/", timeout=10) as r:
        assert "script-src 'self' 'wasm-unsafe-eval'" in r.headers["Content-Security-Policy"]
    assert get("/js/noise.mjs") == (200, "text/javascript")
    assert get("/web/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm") == (200, "application/wasm")
    assert get("/desktop/app.py")[0] == 404  # only /web/, /js/ and /export/ are served
    assert get("/export/%2e%2e/%2e%2e/pyproject.toml")[0] == 404
