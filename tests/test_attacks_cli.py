"""The attack set through the command line, as a user (or an attacker's victim) runs it: each case must end in
one line on stderr and a non-zero status, within 5 s of its own work, under 1 GiB, changing nothing outside
its output. Slow (each case is a fresh process); bench/reliability.py runs it and reports the worst case.
"""
import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT
from onnx import helper
from test_hostile_data import _idx_dir, _int32_labels, _npy, _npy_header, _npz
from test_hostile_exports import _before_clip, _const, _replace, _set_spec, _spec, forge

from edgevae import spec as S

WRAPPER = ("import os, re, sys\nfrom edgevae._cli import main\ntry:\n    code = main(sys.argv[1:])\nfinally:\n"
           "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
           "    open(os.environ['EDGEVAE_HWM'], 'w').write(hwm)\nsys.exit(code)\n")


def _run(args, tmp_path, timeout=120):
    hwm = tmp_path / "hwm"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", WRAPPER, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "EDGEVAE_HWM": str(hwm)})
    return r, time.perf_counter() - start, int(hwm.read_text()) / 1024


def _exports(export_dir, tmp_path):
    """name -> (export directory, command) for every hostile-export case."""
    def op(name, node_op, domain=""):
        def edit(m):
            _before_clip(m, helper.make_node(node_op, ["?"], [f"{name}_out"], domain=domain))
        return forge(export_dir, tmp_path, edit, name=name)

    def spec_field(name, field, value, role="decoder"):
        def edit(m):
            _set_spec(m, {**_spec(m), field: value})
        return forge(export_dir, tmp_path, edit, role=role, name=name)

    def bright(m):
        _const(m, "fifty", np.float32(50))
        _before_clip(m, helper.make_node("Mul", ["?", "fifty"], ["bright"]))
        _replace(m, next(n for n in m.graph.node if n.op_type == "Clip").input[2], np.float32(100))

    def bomb(m):
        _const(m, "axes2", np.array([2], np.int64))
        _const(m, "huge", np.array([1, 4, 10**8], np.int64))
        m.graph.node.insert(0, helper.make_node("Unsqueeze", ["z", "axes2"], ["z3"]))
        m.graph.node.insert(1, helper.make_node("Expand", ["z3", "huge"], ["big"]))

    cases = {"random-op": op("random", "RandomNormalLike"), "sin": op("sin", "Sin"),
             "contrib-op": op("contrib", "FusedGemm", "com.microsoft"),
             "pixels-above-1": forge(export_dir, tmp_path, bright, name="bright"),
             "expand-bomb": forge(export_dir, tmp_path, bomb, name="bomb"),
             "latent-1e9": spec_field("latent", "latent_shape", [10**9], role="encoder"),
             "pair-id-list": spec_field("pairlist", "pair_id", ["x"])}
    for name, make in (("fifo-manifest", lambda d: (d / S.MANIFEST).unlink() or os.mkfifo(d / S.MANIFEST)),
                       ("fifo-encoder", lambda d: (d / S.ENCODER_FILE).unlink() or os.mkfifo(d / S.ENCODER_FILE)),
                       ("dev-zero", lambda d: (d / S.ENCODER_FILE).unlink() or (d / S.ENCODER_FILE).symlink_to(
                           "/dev/zero")),
                       ("link-out", lambda d: (d / S.DECODER_FILE).unlink() or (d / S.DECODER_FILE).symlink_to(
                           export_dir / S.DECODER_FILE)),
                       ("deep-json", lambda d: (d / S.MANIFEST).write_text("[" * 10**5 + "]" * 10**5)),
                       ("huge-int", lambda d: (d / S.MANIFEST).write_text('{"pair_id": 1' + "0" * 5000 + "}")),
                       ("bad-utf8", lambda d: (d / S.MANIFEST).write_bytes(b"\xff\xfe{}")),
                       ("nul-name", lambda d: _edit_manifest(d, lambda m: m["files"].update(
                           {"a\x00.onnx": m["files"][S.ENCODER_FILE]}))),
                       ("no-bytes", lambda d: _edit_manifest(d, lambda m: m["files"][S.ENCODER_FILE].pop("bytes")))):
        d = shutil.copytree(export_dir, tmp_path / name)
        make(d)
        cases[name] = d
    return cases


def _edit_manifest(d, change):
    manifest = json.loads((d / S.MANIFEST).read_text())
    change(manifest)
    (d / S.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.slow
def test_every_attack_ends_in_one_line(export_dir, run_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    commands = [(f"export {name}", ["sample" if name in ("pixels-above-1",) else "info", d, *(
        ["--out", out / "s.png"] if name == "pixels-above-1" else [])]) for name, d in
        _exports(export_dir, tmp_path / "exports").items()]

    data = tmp_path / "data"
    data.mkdir()
    bomb = data / "bomb"
    _idx_dir(bomb)
    with gzip.open(bomb / "train-images-idx3-ubyte.gz", "wb") as f:  # a valid header, then 512 MiB of zeros
        f.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (20, 8, 8)))
        for _ in range(512):
            f.write(bytes(1 << 20))
    (bomb / "train-images-idx3-ubyte").unlink()
    corrupt = _idx_dir(data / "corrupt")
    good = gzip.compress((corrupt / "train-images-idx3-ubyte").read_bytes())
    (corrupt / "train-images-idx3-ubyte").unlink()
    (corrupt / "train-images-idx3-ubyte.gz").write_bytes(good[:40] + bytes(len(good) - 40))
    y = np.zeros(10, np.int64)
    y[0] = 2**62
    truncated = _npz(data / "full.npz", x=_npy(np.zeros((10, 8, 8), np.uint8)))
    (data / "cut.npz").write_bytes(truncated.read_bytes()[:100])
    evil = tmp_path / "evil-run"
    evil.mkdir()

    class Evil:
        def __reduce__(self):
            return print, ("this must never run",)
    for name in ("checkpoint.pt", "best.pt"):
        torch.save({"config": Evil()}, evil / name)
    fifo_image = data / "image.png"
    os.mkfifo(fifo_image)
    train = ["train", "--epochs", "1", "--out", out / "run"]
    commands += [
        ("idx label 2^31-1", [*train, "--data", _idx_dir(data / "labels", _int32_labels([0] * 19 + [2**31 - 1]))]),
        ("gzip bomb", [*train, "--data", bomb]), ("corrupt gz", [*train, "--data", corrupt]),
        ("npz header bomb", [*train, "--data", _npz(data / "hb.npz", x=_npy_header((10**6, 10**6, 10**6)))]),
        ("npz label 2^62", [*train, "--data", _npz(data / "y.npz", x=_npy(np.zeros((10, 8, 8), np.uint8)),
                                                   y=_npy(y))]),
        ("truncated npz", [*train, "--data", data / "cut.npz"]),
        ("resume unpicklable", ["train", "--resume", "--out", evil]), ("evaluate unpicklable", ["evaluate", evil]),
        ("report unpicklable", ["report", evil, "--out", out / "report"]),
        ("encode --out ''", ["encode", export_dir, fifo_image, "--out", ""]),
        ("encode a FIFO", ["encode", export_dir, fifo_image, "--out", out / "z.npy"]),
        ("encode /dev/zero", ["encode", export_dir, "/dev/zero", "--out", out / "z.npy"]),
        ("--nrow 1e9", ["sample", export_dir, "--nrow", "1000000000", "--out", out / "s.png"]),
        ("--threads 1e5", ["sample", export_dir, "--threads", "100000", "--out", out / "s.png"]),
        ("--scale 1e5", ["sample", export_dir, "--scale", "100000", "--out", out / "s.png"]),
        ("download --root a file", ["download", "mnist", "--root", fifo_image]),
    ]

    site = tmp_path / "site"  # a user's web app holding a manifest.json
    (site / "src").mkdir(parents=True)
    for name, text in (("index.html", "<html>"), ("src/app.js", "app()"), (S.MANIFEST, '{"name": "app"}')):
        (site / name).write_text(text)
    commands.append(("export --force onto a user's directory", ["export", run_dir, "--out", site, "--force"]))
    decoy = tmp_path / ".X.tmp-1-2"  # what a glob built from --out 'dir/*' used to match
    decoy.mkdir()
    (decoy / "keep").write_text("keep")
    (decoy / ".edgevae-export.lock").write_text(f"{socket.gethostname()} 999999999\n")

    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()
              and not p.is_symlink() and p.parent != out}
    worst_seconds, worst_rss = 0.0, 0.0
    for name, args in commands:
        r, seconds, rss = _run(args, tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode in (1, 2) and len(lines) == 1 and "Traceback" not in r.stderr, (name, r.stderr[-500:])
        assert "must never run" not in r.stdout + r.stderr, name
        assert rss < 1024, (name, rss)
        worst_seconds, worst_rss = max(worst_seconds, seconds), max(worst_rss, rss)
    r, seconds, rss = _run(["export", run_dir, "--out", tmp_path / "*"], tmp_path)  # --out 'dir/*' works literally
    assert r.returncode == 0 and (tmp_path / "*" / S.MANIFEST).is_file(), r.stderr
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before if p.exists()}
    assert after == before, sorted(set(before) - set(after))  # nothing outside the outputs changed or went
    print(f"attacks: {len(commands)} cases through the CLI, all one line; slowest {worst_seconds:.1f} s "
          f"(process start and imports included), peak RSS {worst_rss:.0f} MiB")
