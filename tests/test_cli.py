"""The three CLIs end to end in fresh processes, as a user runs them, and their one-line errors."""
import hashlib
import json

from conftest import TINY, run_cli


def test_train_export_sample_end_to_end(tmp_path):
    run, exp = tmp_path / "run", tmp_path / "exp"
    flags = [f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    r = run_cli("-m", "train", *flags, "--epochs=1", f"--out={run}")
    assert r.returncode == 0, r.stderr
    assert "config: data=shapes" in r.stdout and f"wrote {run / 'checkpoint.pt'}" in r.stdout
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1] and {"train_loss", "test_neg_elbo", "test_kl"} <= rows[0].keys()
    assert (run / "samples" / "epoch_001.png").exists()

    r = run_cli("-m", "export", str(run), "--out", str(exp))
    assert r.returncode == 0, r.stderr
    assert "verified: onnx.checker ok, no random op" in r.stdout and f"wrote {exp / 'encoder.onnx'}" in r.stdout

    digests = []
    for i, seed in enumerate((0, 0, 1)):
        r = run_cli("-m", "runtime", "sample", str(exp), "--n", "16", "--seed", str(seed), "--out", str(tmp_path / f"{i}.png"))
        assert r.returncode == 0, r.stderr
        assert f"wrote {tmp_path / f'{i}.png'} (16 samples, seed {seed}" in r.stdout
        digests.append(hashlib.sha256((tmp_path / f"{i}.png").read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]

    r = run_cli("-m", "runtime", "info", str(exp))
    assert r.returncode == 0 and "latent dim  4" in r.stdout and "trained on  shapes, 1 epochs" in r.stdout


def _one_line_error(r, *fragments):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(lines) >= 1
    assert all(f in lines[-1] for f in fragments), r.stderr


def test_errors_are_one_line(tmp_path, export_dir):
    _one_line_error(run_cli("-m", "runtime", "sample", str(tmp_path / "missing")), "no such directory")
    _one_line_error(run_cli("-m", "runtime", "sample", str(export_dir), "--n", "0"), "n must be an int")
    _one_line_error(run_cli("-m", "runtime", "sample", str(export_dir), "--out", str(tmp_path / "x" / "y.png")),
                    "cannot write")
    _one_line_error(run_cli("-m", "export", str(tmp_path), "--out", str(tmp_path / "e")), "no checkpoint.pt")
    _one_line_error(run_cli("-m", "train", "--data", str(tmp_path / "nope")), "--data must be 'shapes'")
    _one_line_error(run_cli("-m", "train", "--latent-dim", "0"), "--latent-dim must be >= 1")
    _one_line_error(run_cli("-m", "train", "--no-such-flag"), "unrecognized arguments")
