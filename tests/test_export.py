"""The graph contract of docs/design.md, checked with onnx and plain onnxruntime (not through the runtime)."""
import hashlib
import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import TINY

from edgevae import spec as S
from edgevae.export.build import ExportError, export
from edgevae.export.graphs import op_types

D, SHAPE = TINY["latent_dim"], (1, TINY["image_size"], TINY["image_size"])


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _io(graph_io):
    return [(v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in graph_io]


def test_names_dtypes_and_shapes(export_dir):
    f32 = onnx.TensorProto.FLOAT
    enc, dec = onnx.load(export_dir / S.ENCODER_FILE), onnx.load(export_dir / S.DECODER_FILE)
    assert _io(enc.graph.input) == [("x", f32, ["batch", *SHAPE]), ("eps", f32, ["batch", D])]
    assert _io(enc.graph.output) == [(n, f32, ["batch", D]) for n in ("z", "mu", "logvar")]
    assert _io(dec.graph.input) == [("z", f32, ["batch", D])]
    assert _io(dec.graph.output) == [("x_hat", f32, ["batch", *SHAPE])]


def test_no_random_op_and_checker_passes(export_dir):
    for name in (S.ENCODER_FILE, S.DECODER_FILE):
        model = onnx.load(export_dir / name)
        onnx.checker.check_model(model, full_check=True)
        assert not op_types(model) & S.RANDOM_OPS


def test_z_is_mu_plus_sigma_eps_and_x_hat_in_unit_range_at_any_batch(export_dir):
    enc, dec = _session(export_dir / S.ENCODER_FILE), _session(export_dir / S.DECODER_FILE)
    rng = np.random.default_rng(0)
    for n in (1, 7, 64, 256):
        x = rng.random((n, *SHAPE), dtype=np.float32)
        eps = rng.standard_normal((n, D), dtype=np.float32)
        z, mu, logvar = enc.run(None, {"x": x, "eps": eps})
        assert z.shape == mu.shape == logvar.shape == (n, D)
        # Same float32 formula evaluated by numpy: only exp's last-bit rounding can differ, far below 1e-5.
        np.testing.assert_allclose(z, mu + np.exp(0.5 * logvar) * eps, atol=1e-5, rtol=0)
        x_hat = dec.run(None, {"z": z})[0]
        assert x_hat.shape == (n, *SHAPE) and x_hat.dtype == np.float32
        assert x_hat.min() >= 0.0 and x_hat.max() <= 1.0


def test_noise_is_an_input_not_a_constant(export_dir):
    """Different eps must give different z with the same x; zero eps must give z == mu exactly."""
    enc = _session(export_dir / S.ENCODER_FILE)
    x = np.full((3, *SHAPE), 0.5, dtype=np.float32)
    z0, mu, _ = enc.run(None, {"x": x, "eps": np.zeros((3, D), np.float32)})
    z1, _, _ = enc.run(None, {"x": x, "eps": np.ones((3, D), np.float32)})
    assert np.array_equal(z0, mu)
    assert not np.allclose(z0, z1)


def test_metadata_spec_and_manifest(export_dir):
    specs = {}
    for role, name in (("encoder", S.ENCODER_FILE), ("decoder", S.DECODER_FILE)):
        meta = _session(export_dir / name).get_modelmeta().custom_metadata_map
        specs[role] = json.loads(meta[S.METADATA_KEY])
        assert set(S.REQUIRED_FIELDS) <= specs[role].keys() and specs[role]["noise"] == S.NOISE
        assert specs[role]["pixel_range"] == [0.0, 1.0] and specs[role]["classes"] is None
        assert specs[role]["opset"] == 18
        assert specs[role]["role"] == role
        assert specs[role]["schema_version"] == S.SCHEMA_VERSION
        assert specs[role]["latent_dim"] == D and specs[role]["image_shape"] == list(SHAPE)
        assert specs[role]["training"]["dataset"] == "shapes" and specs[role]["training"]["epochs"] == TINY["epochs"]
        # only the whitelisted, model-describing config fields travel: no run directory, data path or device
        config = specs[role]["training"]["config"]
        assert config["latent_dim"] == D and not {"out", "data", "data_root", "mirror", "device"} & config.keys()
        assert str(export_dir.parent) not in json.dumps(specs[role]) and "/tmp" not in json.dumps(specs[role])
        assert all(v <= 1e-5 for v in specs[role]["parity"]["max_abs_diff"].values())
    assert specs["encoder"]["pair_id"] == specs["decoder"]["pair_id"]
    manifest = json.loads((export_dir / S.MANIFEST).read_text())
    assert manifest["pair_id"] == specs["encoder"]["pair_id"]
    for name in (S.ENCODER_FILE, S.DECODER_FILE):
        assert manifest["files"][name]["sha256"] == hashlib.sha256((export_dir / name).read_bytes()).hexdigest()
    assert sorted(p.name for p in export_dir.iterdir()) == sorted([S.ENCODER_FILE, S.DECODER_FILE, S.MANIFEST])


def test_existing_destination_needs_force_and_force_replaces_only_an_export(run_dir, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        export(run_dir, out, log=lambda *_: None)
    with pytest.raises(ExportError, match="replaces only an earlier export or an empty directory"):
        export(run_dir, out, force=True, log=lambda *_: None)
    assert (out / "keep.txt").read_text() == "mine"  # untouched either way
    with pytest.raises(ExportError, match="is the run directory or contains it"):
        export(run_dir, run_dir.parent, force=True, log=lambda *_: None)
    first = export(run_dir, tmp_path / "e2", log=lambda *_: None)
    pair = json.loads((first / S.MANIFEST).read_text())["pair_id"]
    export(run_dir, first, force=True, log=lambda *_: None)  # an earlier export is replaced
    assert json.loads((first / S.MANIFEST).read_text())["pair_id"] != pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e2", "exp"]  # no temporary directories left behind


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has this pid now (short of a reuse within microseconds)


def test_stale_temp_directory_of_a_killed_export_is_cleared_and_nothing_else(run_dir, tmp_path):
    import socket

    from edgevae.export import destination

    def leftover(name: str, pid: int | None, host: str | None = None):
        d = tmp_path / name
        d.mkdir()
        (d / "encoder.onnx").write_bytes(b"half")  # what a SIGKILL mid-write leaves
        if pid is not None:
            (d / destination.LOCK).write_text(f"{host or socket.gethostname()} {pid}\n")
        return d

    leftover(f".exp.tmp-{_dead_pid()}-0a1b", _dead_pid())  # killed: removed
    kept = [leftover(".exp.tmp-1-live", os.getppid()),  # an export in progress in a live process
            leftover(".exp.tmp-no-lock", None),  # not provably ours
            leftover(".exp.tmp-other-host", _dead_pid(), host="another-host"),  # a shared disk: not ours to judge
            leftover(".other.tmp-1-x", _dead_pid())]  # another export's name
    export(run_dir, tmp_path / "exp", log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["exp", *(k.name for k in kept)])


def test_out_names_are_literal_not_globs(run_dir, tmp_path):
    """--out 'dir/*' exports to a directory named '*', and clears nothing but its own leftovers."""
    import socket

    from edgevae.export import destination

    other = tmp_path / ".X.tmp-1-2"  # what `.*.tmp-*` would have matched
    other.mkdir()
    (other / destination.LOCK).write_text(f"{socket.gethostname()} {_dead_pid()}\n")
    out = export(run_dir, tmp_path / "*", log=lambda *_: None)
    assert out.name == "*" and (out / S.MANIFEST).is_file() and other.is_dir()


def test_force_replaces_only_exactly_an_export(run_dir, export_dir, tmp_path):
    site = tmp_path / "site"  # a user's web app that happens to hold a manifest.json
    (site / "src").mkdir(parents=True)
    (site / "index.html").write_text("<html>")
    (site / "src" / "app.js").write_text("app()")
    (site / S.MANIFEST).write_text(json.dumps({"name": "my-app", "files": {}}))
    with pytest.raises(ExportError, match="replaces only an earlier export"):
        export(run_dir, site, force=True, log=lambda *_: None)
    assert (site / "index.html").read_text() == "<html>" and (site / "src" / "app.js").read_text() == "app()"
    extra = shutil.copytree(export_dir, tmp_path / "extra")  # an export plus one file of the user's
    (extra / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="replaces only an earlier export"):
        export(run_dir, extra, force=True, log=lambda *_: None)
    assert (extra / "notes.txt").read_text() == "mine"
    link = tmp_path / "link"
    link.symlink_to(shutil.copytree(export_dir, tmp_path / "target"))
    with pytest.raises(ExportError, match="symbolic link"):
        export(run_dir, link, force=True, log=lambda *_: None)
    exact = shutil.copytree(export_dir, tmp_path / "exact")
    export(run_dir, exact, force=True, log=lambda *_: None)  # exactly an export: replaced
    assert json.loads((exact / S.MANIFEST).read_text())["pair_id"] != \
        json.loads((export_dir / S.MANIFEST).read_text())["pair_id"]


def test_not_a_run_directory(tmp_path):
    with pytest.raises(ExportError, match="no best.pt or checkpoint.pt"):
        export(tmp_path, tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_the_written_files_are_checked_against_the_graphs_verified_not_against_pytorch_again(run_dir, export_dir):
    # after the gates (parity with PyTorch on their inputs and bounds), export checks that the files it wrote decode
    # as the verified graphs do: PyTorch drifting by more than fp32 rounding does not fail it, a different graph does
    import torch

    from edgevae.export import build, gates
    from edgevae.train.checkpoint import load_run

    vae, _, _ = load_run(run_dir, "auto")
    vae.eval()
    protos = (onnx.load(export_dir / S.ENCODER_FILE), onnx.load(export_dir / S.DECODER_FILE))
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(1 + 1e-3)  # PyTorch now differs from the files by far more than the 1e-5 bound
    build._check_written(export_dir, vae, {"fp32": (protos, None)}, 1e-5)
    other = onnx.load(export_dir / S.DECODER_FILE)
    for init in other.graph.initializer:  # a graph that is not the one written
        if init.data_type == onnx.TensorProto.FLOAT and init.raw_data:
            values = np.frombuffer(init.raw_data, np.float32) * np.float32(1.01)
            init.raw_data = values.astype(np.float32).tobytes()
    with pytest.raises(gates.ExportCheckError, match="written fp32 decoder differs from what was verified"):
        build._check_written(export_dir, vae, {"fp32": ((protos[0], other), None)}, 1e-5)
