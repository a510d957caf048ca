"""`edgevae evaluate` and `edgevae report` on tiny runs of every kind trained here in seconds."""
import json

import pytest
from conftest import run_cli
from PIL import Image

from edgevae.train.config import TrainConfig
from edgevae.train.evaluate import main as evaluate_main
from edgevae.train.loop import train
from edgevae.train.report import main as report_main

# 16x16 generated shapes so two stride-2 conv layers fit; about a second a run.
SMALL = dict(data="shapes", num_train=160, num_test=48, image_size=16, hidden=(32,), conv_channels=(4, 8),
             latent_dim=3, epochs=1, batch_size=32, seed=0)
KINDS = {
    "vae": dict(),
    "ae": dict(model="ae"),
    "conv": dict(arch="conv"),
    "conv-ae-conditional": dict(arch="conv", model="ae", conditional=True),
    "conditional-2d": dict(conditional=True, latent_dim=2),
    "gaussian": dict(likelihood="gaussian"),
    "continuous-bernoulli-2d": dict(likelihood="continuous-bernoulli", latent_dim=2),
    # the colour default's latent: 2 x h x w on the residual family's coarsest grid, with the fitted Gaussian
    "resnet-grid": dict(arch="resnet", widths=(4, 8), latent_dim=0, latent_channels=2, prior_fit="gaussian"),
}
FIGURES = ("latent.png", "prior_samples.png", "manifold.png", "interpolation.png")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {name: train(TrainConfig(out=str(base / name), **{**SMALL, **extra})) for name, extra in KINDS.items()}


def test_evaluate_cli_writes_json_and_prints_the_table(runs, tmp_path):
    r = run_cli("evaluate", str(runs["vae"]), "--k", "64", "--limit", "20")
    assert r.returncode == 0, r.stderr
    result = json.loads((runs["vae"] / "evaluation.json").read_text())
    assert result["k"] == 64 and result["test_images"] == 20 and result["test_data"] == "binarized once, seed 2015"
    assert len(result["kl_per_dim"]) == len(result["activity"]) == 3
    assert 0 <= result["active_units"] <= 3
    # the 64-sample bound is tighter than the ELBO: by Jensen per image in expectation, and by far more than
    # the reconstruction term's Monte Carlo error on an untrained-ish model with a KL of several nats
    assert result["nll"] < result["neg_elbo"]
    assert f"{result['nll']:.2f} ± {result['nll_stderr']:.2f}" in r.stdout and "active units" in r.stdout
    assert "wrote" in r.stdout.splitlines()[-1]


@pytest.mark.parametrize("name", [n for n in KINDS if n != "vae"])
def test_evaluate_every_kind(runs, name, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert evaluate_main([str(runs[name]), "--k", "16", "--checkpoint", "last", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["test_images"] == SMALL["num_test"] and result["checkpoint"].endswith("checkpoint.pt")
    printed = capsys.readouterr().out
    # the per-dimension table: every dimension up to 30; beyond, the 10 highest-KL ones and a summary
    dims = [line for line in printed.splitlines() if line.startswith("dim ")]
    if result.get("latent_dim", 0) > 30:
        assert len(dims) == 1 and f"KL per dimension over {result['latent_dim']}: median" in printed
    if "ae" in name.split("-"):
        assert "recon_nll" in result and "nll" not in result and "no ELBO" in printed
    else:
        assert result["nll"] < result["neg_elbo"]  # as above
        likelihood = KINDS[name].get("likelihood", "bernoulli")
        # scored as trained: a Bernoulli on one fixed binarization, the continuous Bernoulli on one fixed
        # dequantization (its density is unbounded at exact 0 and 1), the others on the images
        scored = {"bernoulli": "binarized once, seed 2015", "continuous-bernoulli": "dequantized once, seed 0"}
        assert result["test_data"] == scored.get(likelihood, "as given")
    assert ("conditional" in result) == KINDS[name].get("conditional", False)  # says it scores -log p(x|y)


def test_evaluate_and_report_refuse_a_directory_that_is_not_a_run(tmp_path, capsys):
    for main in (evaluate_main, report_main):
        assert main([str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "best.pt" in err[0]


def _pngs(directory):
    sizes = {}
    for path in sorted(directory.glob("*.png")):
        with Image.open(path) as image:
            image.verify()  # a complete PNG
            sizes[path.name] = image.size
    return sizes


def test_report_cli_draws_ae_beside_vae(runs, tmp_path):
    r = run_cli("report", str(runs["vae"]), "--compare", str(runs["ae"]), "--out", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    sizes = _pngs(tmp_path / "r")
    assert set(sizes) == {*FIGURES, "kl_per_dim.png"}
    assert sizes["latent.png"][0] > 1.5 * sizes["latent.png"][1]  # two panels side by side (and a legend)
    assert "wrote" in r.stdout


@pytest.mark.parametrize("names", [("conv",), ("conv-ae-conditional",), ("conditional-2d", "continuous-bernoulli-2d"),
                                   ("gaussian", "ae"), ("resnet-grid", "vae")])
def test_report_on_every_kind(runs, names, tmp_path):
    extra = ["--compare", str(runs[names[1]])] if len(names) > 1 else []
    assert report_main([str(runs[names[0]]), *extra, "--checkpoint", "last"]) == 0
    sizes = _pngs(runs[names[0]] / "report")
    variational = any("ae" not in n.split("-") for n in names)
    assert set(sizes) == {*FIGURES, *(["kl_per_dim.png"] if variational else [])}
