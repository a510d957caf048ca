"""DistributedDataParallel: 2 CPU processes under torchrun (gloo) against one process, same config.

Both runs see the same image order and the same noise (drawn for the whole global batch, then shared
out), and the loss is scaled so the averaged gradient is the global batch's mean gradient. What can
differ is float32 summation order: gloo adds two half-batch gradients where one process sums the
whole batch, ~1e-7 relative per step. Over 20 Adam steps we measure ~2e-7 on weights (absolute) and
metrics (relative); the bounds below (1e-5 each) leave ~50x headroom, while a
real defect (a rank training on the wrong shard, unscaled gradients, wrong noise) moves them by 1e-2+.
"""
import json
import math
import subprocess
import sys

import torch
from conftest import run_cli

# 330 images -> 297 train after the 10% validation split: the last batch of 9 splits 5 / 4 over the ranks.
FLAGS = dict(data="shapes", num_train=330, num_test=64, image_size=16, hidden="32", latent_dim=3, epochs=2,
             batch_size=32, seed=0, binarize=True, conditional=True)
WEIGHT_TOL, METRIC_RTOL = 1e-5, 1e-5
TIMING = ("seconds", "train_images_per_second")


def _flags(out):
    return [f"--{k.replace('_', '-')}={v}" if not isinstance(v, bool) else f"--{k.replace('_', '-')}"
            for k, v in FLAGS.items()] + [f"--out={out}"]


def test_two_processes_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r = run_cli("train", *_flags(one))
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "edgevae", "train", *_flags(two)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "2 processes" in r.stdout and r.stdout.count("epoch   2/2") == 1  # rank 0 alone prints
    a = torch.load(one / "checkpoint.pt", weights_only=True)
    b = torch.load(two / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 2 * math.ceil(297 / 32)
    for name, weight in a["model"].items():
        assert torch.allclose(weight, b["model"][name], atol=WEIGHT_TOL, rtol=0), name
    rows = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (one, two)]
    assert len(rows[0]) == len(rows[1]) == 2
    for row_a, row_b in zip(*rows):
        for key, value in row_a.items():
            if key not in TIMING:
                assert math.isclose(value, row_b[key], rel_tol=METRIC_RTOL), key
