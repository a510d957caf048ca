"""Faults: SIGKILL during training, then --resume; a download cut off mid-transfer. Nothing is lost or faked."""
import http.server
import json
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import ROOT, run_cli
from test_sources import fake_mnist  # noqa: F401  (fixture: tiny MNIST files and their table)

from edgevae.train import download

FLAGS = ["--data", "shapes", "--num-train", "3000", "--num-test", "200", "--hidden", "64", "--latent-dim", "4",
         "--epochs", "6", "--batch-size", "64", "--seed", "3"]
TIMING = ("seconds", "train_images_per_second")  # wall-clock fields differ between any two runs


def _mtime(path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_sigkill_at_random_moments_then_resume_ends_as_if_never_killed(tmp_path):
    reference = tmp_path / "reference"
    assert run_cli("train", *FLAGS, "--out", str(reference)).returncode == 0
    run, rng, kills, mid_training = tmp_path / "killed", random.Random(7), 0, 0
    env = {"PATH": "/usr/bin:/bin"}
    for _ in range(3):
        resume = ["--resume"] if (run / "checkpoint.pt").exists() else []
        saved = _mtime(run / "checkpoint.pt")
        proc = subprocess.Popen([sys.executable, "-m", "edgevae", "train", *FLAGS, "--out", str(run), *resume],
                                cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait for this process to save an epoch (however slow the machine), then kill it somewhere in the
        # next one (~0.5 s with its grids and plot): mid-step, mid-evaluation or mid-write of a checkpoint.
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and _mtime(run / "checkpoint.pt") == saved:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            if (run / "checkpoint.pt").exists():
                mid_training += 1
                # The last checkpoint is always whole: written to a temp file, then renamed.
                state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
                assert 0 <= state["epoch"] <= 6
    resume = ["--resume"] if (run / "checkpoint.pt").exists() else []
    final = run_cli("train", *FLAGS, "--out", str(run), *resume)
    assert final.returncode == 0, final.stderr
    print(f"faults: {kills} SIGKILLs injected ({mid_training} after the first checkpoint), every run resumed; "
          f"final metrics and weights identical to an uninterrupted run")
    assert kills >= 2  # the schedule above must actually interrupt training
    assert _metrics(run) == _metrics(reference)
    want = torch.load(reference / "checkpoint.pt", weights_only=True)["model"]
    got = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(want[k], got[k]) for k in want)


class _CutOff(http.server.BaseHTTPRequestHandler):
    """Announces each file's full length, sends half of it, then drops the connection."""
    files: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        data = self.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.connection.close()


def test_download_cut_off_mid_transfer_leaves_no_file_that_passes_as_complete(tmp_path, fake_mnist):  # noqa: F811
    _CutOff.files = {f"{stem}.gz": data for stem, data in fake_mnist.items()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutOff)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(download.DownloadError):
            download.fetch("mnist", tmp_path / "root", mirror=f"http://127.0.0.1:{server.server_address[1]}/",
                           log=lambda *_: None)
    finally:
        server.shutdown()
        server.server_close()
    folder = tmp_path / "root" / "mnist"
    left = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert not [n for n in left if n.endswith(".gz")], left  # no final-named file: nothing passes as complete
    assert not [n for n in left if n.endswith(".part")], left  # and no partial file lingers
