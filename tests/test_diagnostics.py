"""Guard rails on the latent: collapse and far-from-prior verdicts, the training warning, the checkpoint's
diagnostics, export refusing a collapsed model, `edgevae info` and `edgevae evaluate` showing them."""
import json
import math
import shutil

import pytest
import torch
from conftest import TINY, run_cli

from edgevae.train.diagnostics import ACTIVE_THRESHOLD, DIM_RMS_FAR, diagnose


def test_verdicts_on_constructed_posteriors():
    g = torch.Generator().manual_seed(0)
    n, d = 500, 6
    healthy = diagnose(torch.randn(n, d, generator=g) * 0.9, torch.full((n, d), math.log(0.19)))
    assert healthy.active_units == d and not healthy.collapsed and not healthy.far_from_prior
    assert healthy.warnings() == [] and healthy.note.startswith(f"{d} of {d} latent units active")
    # every q(z|x) the prior: mu 0, logvar 0 -> nothing active, KL 0, z's rms exactly 1
    collapsed = diagnose(torch.zeros(n, d), torch.zeros(n, d))
    assert collapsed.collapsed and collapsed.active_units == 0 and collapsed.kl == 0
    assert math.isclose(collapsed.latent_rms, 1.0)
    assert len(collapsed.warnings()) == 1 and "posterior collapse: 0 of 6" in collapsed.warnings()[0]
    assert "--kl-warmup" in collapsed.note  # says what to try
    # latents around +-10 (a KL weight far below 1): flagged, with the rms said
    far = diagnose(torch.randn(n, d, generator=g) * 10, torch.full((n, d), -6.0))
    assert far.far_from_prior and far.max_dim_rms > DIM_RMS_FAR and "latents far from N(0, I)" in far.note
    # spatial latents are judged per element
    spatial = diagnose(torch.randn(n, 2, 3, 3, generator=g), torch.zeros(n, 2, 3, 3))
    assert spatial.latent_dim == 18 and len(spatial.kl_per_dim) == 18
    # a unit just under Burda's threshold is inactive
    quiet = torch.randn(n, 1, generator=g) * math.sqrt(ACTIVE_THRESHOLD / 2)
    mu = torch.cat([torch.randn(n, 1, generator=g), quiet], 1)
    assert diagnose(mu, torch.zeros(n, 2)).active_units == 1


@pytest.fixture(scope="module")
def collapsed_run(tmp_path_factory):
    """A run whose KL weight (beta 300) makes ignoring z the optimum: posterior collapse in one epoch."""
    from edgevae.train.config import TrainConfig
    from edgevae.train.loop import train

    lines = []
    out = tmp_path_factory.mktemp("collapsed") / "run"
    config = TrainConfig(out=str(out), **{**TINY, "beta": 300.0, "epochs": 3})
    import builtins

    real_print = builtins.print
    builtins.print = lambda *a, **k: lines.append(" ".join(map(str, a)))  # the loop logs with print
    try:
        train(config)
    finally:
        builtins.print = real_print
    return out, lines


def test_training_warns_once_and_stores_the_verdict_in_the_checkpoint(collapsed_run):
    out, lines = collapsed_run
    warnings = [line for line in lines if line.startswith("warning: posterior collapse")]
    assert len(warnings) == 1 and "--kl-warmup" in warnings[0]  # once, with what to try
    assert any(line.startswith("latent: posterior collapse") for line in lines)  # the final verdict
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    d = ckpt["diagnostics"]
    assert d["collapsed"] and d["active_units"] == 0 and d["latent_dim"] == TINY["latent_dim"]
    assert len(d["kl_per_dim"]) == TINY["latent_dim"] and isinstance(d["note"], str)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["active_units"] == 0


def test_export_refuses_a_collapsed_model_and_says_what_to_try(collapsed_run, tmp_path):
    out, _ = collapsed_run
    r = run_cli("export", str(out), "--out", str(tmp_path / "e"))
    assert r.returncode == 1 and r.stderr.startswith("error: the model has collapsed: active units 0")
    assert "--kl-warmup" in r.stderr and not (tmp_path / "e").exists()


def test_a_constant_decoder_is_refused_even_with_an_active_encoder(run_dir, tmp_path):
    """A decoder that ignores z (weights of its first layer zeroed) passes every parity bound; the spread check
    catches it."""
    from edgevae.export.build import export
    from edgevae.export.gates import ExportCheckError

    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    for name in ("checkpoint.pt", "best.pt"):
        ckpt = torch.load(broken / name, weights_only=True)
        first = next(k for k in ckpt["model"] if k.startswith("decoder.") and k.endswith(".weight"))
        ckpt["model"][first].zero_()
        torch.save(ckpt, broken / name)
    with pytest.raises(ExportCheckError, match=r"collapsed: x_hat spread over z 0 \(needs >= 0.001\)"):
        export(broken, tmp_path / "e", log=lambda *_: None)


def test_export_copies_the_diagnostics_and_info_shows_them(run_dir, export_dir):
    import edgevae

    spec = edgevae.load(export_dir).spec
    saved = torch.load(run_dir / "best.pt", weights_only=True)["diagnostics"]
    assert spec["diagnostics"] == saved and not saved["collapsed"]
    r = run_cli("info", str(export_dir))
    assert r.returncode == 0
    line = next(x for x in r.stdout.splitlines() if x.startswith("latent use  "))
    assert f"{saved['active_units']} of {saved['latent_dim']} units active" in line and "KL" in line


def test_evaluate_shows_progress_bits_per_dim_and_the_latent_verdict(kind_export, tmp_path, capsys):
    from edgevae.train.evaluate import EvalConfig, evaluate_run

    run, _ = kind_export("resnet")
    lines = []
    result = evaluate_run(run, EvalConfig(k=8, limit=20, out=str(tmp_path / "e.json")), log=lines.append)
    err = capsys.readouterr().err
    assert "IWAE k=8" in err and "20/20" in err  # tqdm's bar: images done of total, with rate and time left
    assert "160 decoder passes" in lines[0]
    # logistic: a probability mass, so bits/dim is the NLL over C*H*W ln 2 (no 8-bit offset)
    assert math.isclose(result["bits_per_dim"], result["nll"] / (3 * 16 * 16 * math.log(2)), rel_tol=1e-9)
    assert any("bits/dim" in line for line in lines) and "z rms" in lines[-2]
    # the PSNR of decode(mu) against the test images, as the bench scores it, recomputed here
    from edgevae.train.checkpoint import load_run
    from edgevae.train.evaluate import load_test_set

    vae, ckpt, config = load_run(run)

    x, y = load_test_set(config, limit=20)[:2]
    with torch.no_grad():
        mse = float(((vae.decode(vae.encoder(x)[0]) - x) ** 2).double().mean())
    assert math.isclose(result["psnr_db"], 10 * math.log10(1 / mse), abs_tol=1e-3)
    assert any(f"{result['psnr_db']:.2f} dB (mean reconstructions decode(mu)" in line for line in lines)
    assert result["collapsed"] is False and result["warnings"] == []


def test_evaluate_scores_rgba_reconstructions_also_by_what_shows(kind_export, tmp_path):
    from edgevae.train.evaluate import EvalConfig, evaluate_run, mean_psnr, premultiplied

    # colour under fully transparent pixels is invisible: the visible PSNR leaves it out, the plain one counts it
    x = torch.rand(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    x[:, 3, :2] = 0  # two fully transparent rows
    recon = x.clone()
    recon[:, :3, :2] = 0.5  # any colour there
    recon[:, 3, 4] += 0.01  # and a visible change of alpha

    class Fixed:
        def decode(self, mu, y):
            return recon[mu.long().flatten()]

    scores = mean_psnr(Fixed(), x, None, torch.arange(3.0)[:, None], chunk=2)
    visible_mse = float(((premultiplied(recon.double()) - premultiplied(x.double())) ** 2).mean())
    assert math.isclose(scores["visible_psnr_db"], 10 * math.log10(1 / visible_mse), rel_tol=1e-9)
    assert 0 < visible_mse < 0.01 ** 2  # the alpha row's change, and its colour's through it
    assert scores["psnr_db"] < scores["visible_psnr_db"] - 10
    # a whole RGBA run: both in the JSON and the printed table
    run, _ = kind_export("resnet-rgba")
    lines = []
    result = evaluate_run(run, EvalConfig(k=4, limit=16, out=str(tmp_path / "e.json")), log=lines.append)
    assert result["visible_psnr_db"] > 0 and json.loads((tmp_path / "e.json").read_text())["visible_psnr_db"]
    table = "\n".join(lines).splitlines()
    assert any(line.startswith("PSNR visible") and f"{result['visible_psnr_db']:.2f} dB" in line for line in table)
