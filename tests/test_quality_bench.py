"""bench/quality.py end to end on tiny IDX sets: trains, evaluates, and writes its RESULTS.md section from the run."""
import gzip
import importlib.util
import json

import numpy as np

from conftest import ROOT
from test_data import _idx_bytes


def _idx_dir(path, seed):
    rng = np.random.default_rng(seed)
    path.mkdir()
    for stem, array in (("train-images-idx3-ubyte", rng.integers(0, 256, (192, 28, 28))),
                        ("train-labels-idx1-ubyte", rng.integers(0, 10, 192)),
                        ("t10k-images-idx3-ubyte", rng.integers(0, 256, (24, 28, 28))),
                        ("t10k-labels-idx1-ubyte", rng.integers(0, 10, 24))):
        (path / f"{stem}.gz").write_bytes(gzip.compress(_idx_bytes(array)))
    return path


def test_quality_bench_writes_its_section_from_the_run(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("quality", ROOT / "bench" / "quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "bench" / "RESULTS.md"
    results.parent.mkdir()
    results.write_text("# Benchmark results\n\n## Another bench\n\nkeep me\n")
    monkeypatch.setattr(bench.C, "ROOT", tmp_path)  # write_section's RESULTS.md and the paths it prints
    monkeypatch.setattr(bench.C, "RESULTS", results)
    work = tmp_path / "work"
    argv = ["--data", str(_idx_dir(tmp_path / "a", 0)), "--fashion-data", str(_idx_dir(tmp_path / "b", 1)),
            "--epochs", "1", "--fashion-epochs", "1", "--k", "8", "--work", str(work), "--parallel"]
    assert bench.main(argv) == 0
    text = results.read_text()
    assert "keep me" in text and text.count("<!-- begin quality -->") == 1
    for name in ("MNIST", "Fashion-MNIST"):
        row = json.loads((work / name / "quality.json").read_text())
        assert row["k"] == 8 and row["test_images"] == 24 and row["epochs"] == 1
        assert f"**{row['nll']:.2f}** ± {row['nll_stderr']:.2f}" in text  # the table holds what the run measured
    assert "| 86.76 |" in text and "| 84.78 |" in text  # the published numbers beside them
    assert bench.recipe_flags() in text and "--iwae-k" in bench.recipe_flags()
    assert "test NLL" in capsys.readouterr().out
