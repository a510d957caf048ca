"""bench/quality_rgb.py end to end on a tiny RGBA folder: splits, trains ours, the conditional run and the baseline
for seconds each, evaluates, draws its grids and writes its RESULTS.md section from the run."""
import json

import numpy as np
import pytest
from PIL import Image
from test_bench import run_bench


def _folder(root, n=24, size=32):
    """Two classes of coloured discs and bars on transparency, with junk colour under alpha 0 (as real PNGs have)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for cls in ("smileys-emotion", "flags"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            rgba = np.zeros((size, size, 4), np.uint8)
            rgba[..., :3] = rng.integers(0, 256, 3)  # invisible colour everywhere
            inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2 if cls[0] == "s" else \
                (np.abs(yy - size / 2) < size / 4)
            rgba[inside, :3] = (250, 200, 40) if cls[0] == "s" else rng.integers(0, 256, 3)
            rgba[inside, 3] = 255
            Image.fromarray(rgba, "RGBA").save(root / cls / f"{i}.png")
    return root


def test_quality_rgb_bench_writes_its_section_and_grids(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another bench\n\nkeep me\n")
    pictures, work = tmp_path / "pictures", tmp_path / "work"
    run_bench("quality_rgb.py", "--data", str(_folder(tmp_path / "icons")), "--size", "32", "--minutes", "0.05",
              "--cond-minutes", "0.05", "--flat-minutes", "0.05", "--k", "4", "--work", str(work),
              "--pictures", str(pictures), "--results", str(results))
    text = results.read_text()
    assert "keep me" in text and text.count("<!-- begin quality_rgb -->") == 1
    rows = {r["name"]: r for r in json.loads((work / "rows.json").read_text())}
    assert set(rows) == {"ours", "conditional", "flat", "antixk"}
    # 32 x 32: the default's spatial latent is 4 x 8 x 8, the small one 2 x 8 x 8 (both on widths 16,32,64)
    assert rows["ours"]["latent_shape"] == [4, 8, 8] and rows["flat"]["latent_shape"] == [2, 8, 8]
    assert "EdgeVAE, small latent 2x8x8" in text
    for r in rows.values():
        assert f"**{r['psnr']:.2f} dB**" in text  # the table holds what the run measured
        assert f"{r['colour_median']:.1f} / {r['colour_p90']:.1f}" in text and r["colour_p90"] >= r["colour_median"]
        for grid in r["grids"].values():
            if isinstance(grid, str):
                assert (tmp_path / grid).is_file() and f"]({grid})" in text  # linked relative to RESULTS.md
    assert rows["ours"]["k"] == 4 and rows["ours"]["config"]["likelihood"] == "logistic"
    assert rows["conditional"]["grids"]["rows"][:2] == ["smileys-emotion", "flags"]  # the categories asked for first
    # training stopped at the budget: 3 s plus at most one epoch and its evaluation
    assert rows["ours"]["seconds"] < 60 and rows["antixk"]["seconds"] < 10
    with np.load(work / "data.npz") as f:
        x = np.concatenate([f["x_train"], f["x_test"]])
        assert x.shape[1] == 4 and len(f["x_test"]) == round(0.1 * 48)  # RGBA, 90/10
        assert not (x[:, :3] * (x[:, 3:] == 0)).any()  # no colour left under alpha 0
    assert "CC BY 4.0" in text and "shrunk to a side of 8 px" in text and rows["ours"]["curve"]
    # each goal is called met or missed by what the default recipe's run measured
    goal = next(line for line in text.splitlines() if "Goals (EdgeVAE default recipe)" in line)
    ours = rows["ours"]
    assert f"({ours['psnr']:.2f} dB measured" in goal and f"({ours['bits_per_dim']:.3f} measured)" in goal
    assert ("24 dB -- **met**" if ours["psnr"] >= 24 else "24 dB -- **missed**") in goal
    assert ("5 bits/dim -- **met**" if ours["bits_per_dim"] <= 5 else "5 bits/dim -- **missed**") in goal
    assert "Goals (EdgeVAE with the small latent)" in text
    # --train flat trains that row again and takes the others from the saved runs, saying so
    run_bench("quality_rgb.py", "--data", str(tmp_path / "icons"), "--size", "32", "--minutes", "0.05",
              "--cond-minutes", "0.05", "--flat-minutes", "0.05", "--k", "4", "--train", "flat",
              "--work", str(work), "--pictures", str(pictures), "--results", str(results))
    again = {r["name"]: r for r in json.loads((work / "rows.json").read_text())}
    assert {n for n, r in again.items() if r.get("reused")} == {"ours", "conditional", "antixk"}
    assert again["flat"]["trained_at"] and again["flat"]["split"] == rows["ours"]["split"]
    assert again["ours"]["psnr"] == ours["psnr"] and not again["flat"].get("reused")
    assert again["ours"]["colour_median"] == ours["colour_median"]
    assert "Taken from earlier invocations" in results.read_text()
    # --measure ours measures the saved run again (its saved figures made wrong here come back) and keeps its training
    saved = json.loads((work / "rows.json").read_text())
    (work / "rows.json").write_text(json.dumps([{**r, "psnr": 0.0, "bits_per_dim": 99.0} if r["name"] == "ours"
                                                else r for r in saved]))
    run_bench("quality_rgb.py", "--data", str(tmp_path / "icons"), "--size", "32", "--minutes", "0.05",
              "--cond-minutes", "0.05", "--flat-minutes", "0.05", "--k", "4", "--measure", "ours",
              "--work", str(work), "--pictures", str(pictures), "--results", str(results))
    measured = {r["name"]: r for r in json.loads((work / "rows.json").read_text())}
    assert measured["ours"]["psnr"] == pytest.approx(ours["psnr"], abs=1e-9) and measured["ours"]["measured_at"]
    assert measured["ours"]["bits_per_dim"] == pytest.approx(ours["bits_per_dim"], abs=1e-9)
    assert measured["ours"]["seconds"] == ours["seconds"] and measured["ours"]["trained_at"] == ours["trained_at"]
    assert measured["flat"]["seconds"] == again["flat"]["seconds"] and measured["flat"].get("reused")
    assert "Measured again from the saved run without training again" in results.read_text()
    # --reuse rewrites the section from the saved runs without training again; a row saved before colour was
    # measured gets it from its saved model (AntixK's weights too)
    saved = json.loads((work / "rows.json").read_text())
    (work / "rows.json").write_text(json.dumps([{k: v for k, v in r.items() if not k.startswith("colour")}
                                                for r in saved]))
    out = run_bench("quality_rgb.py", "--data", str(tmp_path / "icons"), "--size", "32", "--k", "4", "--reuse",
                    "--work", str(work), "--pictures", str(pictures), "--results", str(results)).stdout
    assert "reusing" in out and "baseline epoch" not in out
    remeasured = {r["name"]: r for r in json.loads((work / "rows.json").read_text())}
    for r in saved:
        assert remeasured[r["name"]]["colour_median"] == pytest.approx(r["colour_median"], abs=1e-6), r["name"]
    assert results.read_text().count("<!-- begin quality_rgb -->") == 1


def test_a_row_is_reused_only_for_the_same_data_split_and_budget(monkeypatch):
    import importlib

    from conftest import ROOT
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench = importlib.import_module("quality_rgb")
    split = {"data": "/x/icons", "size": 32, "channels": 4, "matte": "white", "train": 43, "test": 5}
    row = {"name": "ours", "budget": 20.0, "split": split, "psnr": 17.0}
    assert bench.reusable(row, 20.0, split) and bench.reusable(row, 20.5, split)  # within 5% of the budget
    assert not bench.reusable(row, 22.0, split) and not bench.reusable(row, 3.0, split)
    assert not bench.reusable(None, 20.0, split) and not bench.reusable({}, 20.0, split)  # never ran
    assert not bench.reusable({**row, "split": {**split, "size": 64}}, 20.0, split)  # other data or split
    assert not bench.reusable({k: v for k, v in row.items() if k != "split"}, 20.0, split)  # an older rows.json
    assert not bench.reusable({**{k: v for k, v in row.items() if k != "budget"}, "seconds": 1200}, 20.0, split)
    assert bench.flags({"widths": [16, 32], "conditional": True, "seed": 0}) == "--widths 16,32 --conditional --seed 0"


def test_colour_shift_reads_the_visible_pixels_colour_in_cielab(monkeypatch):
    import importlib

    from conftest import ROOT
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench = importlib.import_module("quality_rgb")
    # CIELAB of sRGB red and white, D65 (the reference values every colour library prints)
    np.testing.assert_allclose(bench.lab(bench.linear(np.array([1.0, 0.0, 0.0]))), [53.2408, 80.0925, 67.2032],
                               atol=1e-3)
    np.testing.assert_allclose(bench.lab(np.ones(3)), [100, 0, 0], atol=1e-4)
    red = np.zeros((2, 4, 8, 8))
    red[:, 0], red[:, 3, 2:6, 2:6] = 1.0, 1.0  # red, visible in the middle only
    orange = red.copy()
    orange[:, 1] = 0.5
    orange[1, :3, 2:6, 2:6] = red[1, :3, 2:6, 2:6]  # the second keeps red where it is visible
    orange[1, 2, 0, 0] = 1.0  # a change under alpha 0 is not seen
    shift = bench.colour_shift(red, orange)
    assert shift[0] == pytest.approx(40.05, abs=0.01) and shift[1] == 0.0
    assert bench.colour_shift(red[:, :3], red[:, :3]).tolist() == [0.0, 0.0]  # RGB: every pixel counts
    summary = bench.colour_summary(red, orange)
    assert summary["colour_worst"] == 0 and summary["colour_p90"] == pytest.approx(0.9 * shift[0])
    with pytest.raises(ValueError, match="RGB or RGBA"):
        bench.colour_shift(red[:, :1], red[:, :1])


@pytest.mark.parametrize("flags, says", [
    (("--train", "ours", "--measure", "ours"), "--train and --measure both name ['ours']"),
    (("--reuse", "--measure", "ours"), "--reuse rewrites the section without measuring"),
    (("--measure", "flat", "--flat-minutes", "0"), "--measure flat: a budget of 0 skips the row"),
    (("--measure", "ours"), "--measure ours: WORK has no run of it"),
])
def test_measure_refuses_what_it_cannot_do_in_one_line(tmp_path, flags, says):
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, "bench/quality_rgb.py", "--data", str(_folder(tmp_path / "icons", n=4)),
                             "--size", "16", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "R.md"),
                             *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and says in result.stderr.strip().splitlines()[-1], result.stderr
    assert not (tmp_path / "R.md").exists()
    if "WORK has no run" not in says:  # the flags alone: refused before the folder is read
        assert not (tmp_path / "work" / "data.npz").exists()
