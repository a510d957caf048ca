"""bench/train_speed.py runs end to end on a tiny IDX set and writes only its own section of RESULTS.md."""
import gzip
import importlib.util

import numpy as np

from conftest import ROOT
from test_data import _idx_bytes


def _bench():
    spec = importlib.util.spec_from_file_location("train_speed", ROOT / "bench" / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_writes_its_section_from_the_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "mnist"
    data.mkdir()
    for stem, array in (("train-images-idx3-ubyte", rng.integers(0, 256, (256, 28, 28))),
                        ("train-labels-idx1-ubyte", rng.integers(0, 10, 256)),
                        ("t10k-images-idx3-ubyte", rng.integers(0, 256, (32, 28, 28))),
                        ("t10k-labels-idx1-ubyte", rng.integers(0, 10, 32))):
        (data / f"{stem}.gz").write_bytes(gzip.compress(_idx_bytes(array)))
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another bench\n\nkeep me\n")
    bench = _bench()
    for _ in range(2):  # the second run replaces the section rather than appending another
        assert bench.main(["--data", str(data), "--repeats", "1", "--results", str(results)]) == 0
    text = results.read_text()
    assert "keep me" in text and text.count(bench.SECTION_BEGIN) == 1 and text.count(bench.SECTION_END) == 1
    rows = [line for line in text.splitlines() if line.startswith("| ") and "images/s" not in line][1:]  # past "---"
    assert len(rows) == 3 and rows[0].endswith("| 1.00x |")
    assert f"--data {data}" in text and "torch" in text  # the command line and versions of this run
    assert rows[1].split("|")[2].strip() in capsys.readouterr().out  # the file says what the run printed
