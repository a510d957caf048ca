"""bench/train_speed.py runs end to end on a tiny IDX set and writes only its own section of RESULTS.md."""
import gzip
import subprocess
import sys

import numpy as np
from conftest import ROOT
from test_data import _idx_bytes


def idx_dir(path, seed, train=256, test=32):
    """A tiny MNIST-format directory of random digits."""
    rng = np.random.default_rng(seed)
    path.mkdir()
    for stem, array in (("train-images-idx3-ubyte", rng.integers(0, 256, (train, 28, 28))),
                        ("train-labels-idx1-ubyte", rng.integers(0, 10, train)),
                        ("t10k-images-idx3-ubyte", rng.integers(0, 256, (test, 28, 28))),
                        ("t10k-labels-idx1-ubyte", rng.integers(0, 10, test))):
        (path / f"{stem}.gz").write_bytes(gzip.compress(_idx_bytes(array)))
    return path


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    """`python bench/SCRIPT ARGS` as a user runs it, from the repository root."""
    result = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def test_bench_writes_its_section_from_the_run(tmp_path):
    data = idx_dir(tmp_path / "mnist", 0)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another bench\n\nkeep me\n")
    for _ in range(2):  # the second run replaces the section rather than appending another
        out = run_bench("train_speed.py", "--data", str(data), "--repeats", "1", "--results", str(results)).stdout
    text = results.read_text()
    assert "keep me" in text
    assert text.count("<!-- begin train_speed -->") == 1 and text.count("<!-- end train_speed -->") == 1
    rows = [line for line in text.splitlines() if line.startswith("| ") and "images/s" not in line][1:]  # past "---"
    assert len(rows) == 3 and rows[0].endswith("| 1.00x |")
    assert f"--data {data}" in text and "torch" in text  # the command line and versions of this run
    assert rows[1].split("|")[2].strip() in out  # the file says what the run printed


def test_every_speed_model_is_one_prepare_export_can_make():
    # the speed benches (variants, generate, cold_start) build their models from _common.MODELS: each entry must be
    # a call prepare_export accepts, or those benches fail before they measure anything
    import inspect

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import _common
    finally:
        sys.path.remove(str(ROOT / "bench"))
    signature = inspect.signature(_common.prepare_export)
    for kwargs in _common.MODELS.values():
        signature.bind(ROOT, **kwargs)  # TypeError on an argument it does not take
    assert _common.MODELS["resnet"]["extra"] == ("--norm", "group")  # the layers its RESULTS figures were timed on
