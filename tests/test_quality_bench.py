"""bench/quality.py end to end on tiny IDX sets: trains, evaluates, and writes its RESULTS.md section from the run."""
import json

from test_bench import idx_dir, run_bench


def test_quality_bench_writes_its_section_from_the_run(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another bench\n\nkeep me\n")
    work = tmp_path / "work"
    run_bench("quality.py", "--data", str(idx_dir(tmp_path / "a", 0, 192, 24)),
              "--fashion-data", str(idx_dir(tmp_path / "b", 1, 192, 24)), "--epochs", "1", "--fashion-epochs", "1",
              "--k", "8", "--work", str(work), "--parallel", "--results", str(results))
    text = results.read_text()
    assert "keep me" in text and text.count("<!-- begin quality -->") == 1
    for name in ("MNIST", "Fashion-MNIST"):
        row = json.loads((work / name / "quality.json").read_text())
        assert row["k"] == 8 and row["test_images"] == 24 and row["epochs"] == 1
        assert f"**{row['nll']:.2f}** ± {row['nll_stderr']:.2f}" in text  # the table holds what the run measured
    assert "| 86.76 |" in text and "| 84.78 |" in text  # the published numbers beside them
    assert "--arch resnet --widths 8,16,32" in text and "--minutes" in text  # the recipe, as a user would type it
