"""Training end to end on tiny generated data: every model kind and objective, reproducibility,
exact --resume (after a clean finish and after Ctrl-C), NaN handling, the run directory's contents."""
import json
import math
import signal

import pytest
import torch

from edgevae.train.checkpoint import BEST, LAST
from edgevae.train.config import TrainConfig
from edgevae.train.loop import Interrupted, train

# Small enough to train in about a second; 16x16 so two stride-2 conv layers fit.
SMALL = dict(data="shapes", num_train=160, num_test=48, image_size=16, hidden=(32,), conv_channels=(4, 8),
             latent_dim=3, epochs=2, batch_size=32, seed=0)
TIMING = ("seconds", "train_images_per_second")  # wall-clock fields: the only ones allowed to differ


def run(tmp_path, name="run", **overrides):
    out = train(TrainConfig(out=str(tmp_path / name), **{**SMALL, **overrides}))
    return out, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def untimed(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(model="ae"),
    dict(arch="conv"),
    dict(arch="conv", model="ae", likelihood="gaussian"),
    dict(conditional=True),
    dict(arch="conv", conditional=True, likelihood="continuous-bernoulli"),
    dict(likelihood="gaussian", sigma=0.1),
    dict(binarize=True, kl_warmup=1, beta=0.5),
    dict(iwae_k=4),
    dict(schedule="cosine", grad_clip=1.0),
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "vae-mlp-bernoulli")
def test_every_model_and_objective_trains(tmp_path, overrides):
    out, rows = run(tmp_path, **overrides)
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert all(math.isfinite(v) for v in row.values())
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # two epochs of Adam must make progress
    ckpt = load(out / LAST)
    assert ckpt["kind"] == overrides.get("model", "vae") and ckpt["epoch"] == 2
    if overrides.get("model") == "ae":
        assert rows[-1]["test_kl"] == 0  # no KL term: the baseline is a plain autoencoder
    if overrides.get("iwae_k"):
        # the k-sample bound is tighter than the ELBO on average; 0.5 nats of slack for k=4 on 48 images
        assert rows[-1]["test_neg_iwae"] <= rows[-1]["test_neg_elbo"] + 0.5
    if overrides.get("kl_warmup"):
        assert rows[0]["beta"] < 0.5 and rows[1]["beta"] == 0.5  # ramped over epoch 1, then --beta
    if overrides.get("schedule") == "cosine":
        assert rows[0]["lr"] == SMALL.get("lr", 1e-3) and rows[1]["lr"] < rows[0]["lr"]


def test_run_directory_holds_what_the_readme_promises(tmp_path):
    out, rows = run(tmp_path, conditional=True)
    for name in ("config.json", "metrics.jsonl", "loss.png", LAST, BEST, "samples/epoch_001.png",
                 "samples/epoch_002.png", "recon/epoch_001.png", "recon/epoch_002.png"):
        assert (out / name).is_file(), name
    ckpt = load(out / LAST)  # weights_only=True: no pickled code in it
    assert {"config", "model", "optimizer", "epoch", "metrics", "dataset", "image_shape", "classes",
            "reference_x", "reference_y"} <= ckpt.keys()
    assert ckpt["reference_x"].dtype == torch.uint8 and len(ckpt["reference_y"]) == len(ckpt["reference_x"])
    assert ckpt["metrics"]["test_neg_elbo"] == rows[-1]["test_neg_elbo"]
    best = load(out / BEST)
    assert best["metrics"]["val_neg_elbo"] == min(r["val_neg_elbo"] for r in rows)


def test_a_long_run_of_short_epochs_writes_dozens_of_grids_and_draws_its_loss_at_the_end(tmp_path, monkeypatch):
    """Grids every epoch to 10, every 10th to 100, every 100th after, and the last epoch's; loss.png at most every
    LOSS_PLOT_SECONDS and always at the end (so it shows every evaluation)."""
    import edgevae.train.loop as loop

    drawn = []
    real = loop.report.loss_curve
    monkeypatch.setattr(loop, "LOSS_PLOT_SECONDS", 3600.0)  # nothing but the first and the end
    monkeypatch.setattr(loop.report, "loss_curve", lambda rows, path: (drawn.append(len(rows)), real(rows, path)))
    out, rows = run(tmp_path, num_train=64, num_test=16, epochs=23)
    written = sorted(p.name for p in (out / "samples").iterdir())
    assert written == [f"epoch_{e:03d}.png" for e in (*range(1, 11), 20, 23)]
    assert sorted(p.name for p in (out / "recon").iterdir()) == written
    assert drawn == [1, 23] and len(rows) == 23


def test_early_stop_rules():
    from types import SimpleNamespace

    from edgevae.train.loop import early_stop

    def rows(*vals, every=5):
        return [{"epoch": every * (i + 1), "val_neg_elbo": v} for i, v in enumerate(vals)]

    auto, never, two = (SimpleNamespace(patience=p) for p in (-1, 0, 2))
    # auto: a tenth of the fall given back for 3 evaluations, and as long past the lowest as it took to reach it
    assert early_stop(auto, rows(200, 100, 120, 120)) is None  # only two evaluations up
    said = early_stop(auto, rows(200, 100, 120, 120, 120))  # lowest at epoch 10; epoch 25 is 15 past it
    assert said == ("the validation -ELBO has given back 20% of its fall and no epoch in the 15 since epoch 10 (as "
                    "many as it took to reach it) went lower (--patience 0 trains on)")
    late = rows(200, 180, 160, 140, 120, 100, 120, 120, 120, every=1)  # lowest at epoch 6, now epoch 9: too soon
    assert early_stop(auto, late) is None
    assert early_stop(auto, late + [{"epoch": e, "val_neg_elbo": 120} for e in (10, 11, 12)])  # 6 past epoch 6
    assert early_stop(auto, rows(200, 100, 101, 101, 101)) is None  # noise near the lowest: goes on
    # N: that many evaluations in a row without a new lowest, whatever they are
    assert early_stop(two, rows(200, 100, 101)) is None
    assert "2 evaluations without a lower validation -ELBO than epoch 10's (--patience 2; a larger one" in \
        early_stop(two, rows(200, 100, 101, 100.5))
    assert early_stop(never, rows(200, 100, 300, 300, 300, 300, 300)) is None
    assert early_stop(auto, [{"epoch": 1, "test_neg_elbo": 5}] * 9) is None  # no validation split: never


def test_a_run_stopped_early_ends_like_a_finished_one_and_resuming_it_says_so(tmp_path, monkeypatch, capsys):
    import edgevae.train.loop as loop

    drawn = []
    real = loop.report.loss_curve
    monkeypatch.setattr(loop, "LOSS_PLOT_SECONDS", 3600.0)
    monkeypatch.setattr(loop.report, "loss_curve", lambda rows, path: (drawn.append(len(rows)), real(rows, path)))
    monkeypatch.setattr(loop, "early_stop", lambda config, history: "a test's reason" if len(history) >= 13 else None)
    out, rows = run(tmp_path, num_train=64, num_test=16, epochs=40)
    assert [r["epoch"] for r in rows] == list(range(1, 14))
    assert "stopped early after epoch 13: a test's reason" in capsys.readouterr().out
    assert load(out / LAST)["epoch"] == 13 and (out / "samples" / "epoch_013.png").is_file()  # the last's grids
    assert drawn == [1, 13]  # and its loss curve
    _, again = run(tmp_path, resume=True, num_train=64, num_test=16, epochs=40)
    assert len(again) == 13 and "nothing to do: " in capsys.readouterr().out  # not one more epoch, then a stop


def test_a_run_stopped_by_ctrl_c_has_its_loss_curve_drawn(tmp_path, monkeypatch):
    import edgevae.train.loop as loop

    drawn = []
    monkeypatch.setattr(loop, "LOSS_PLOT_SECONDS", 3600.0)
    monkeypatch.setattr(loop.report, "loss_curve", lambda rows, path: drawn.append(len(rows)))
    with pytest.raises(Interrupted):
        train(TrainConfig(out=str(tmp_path / "run"), **{**SMALL, "epochs": 6}), on_step=_ctrl_c_at(5, 1))
    assert drawn == [1, 4]


def test_grids_follow_the_schedule_whatever_the_evaluation_cadence():
    from edgevae.train.loop import grid_epoch

    def written(every, epochs=1000):
        last, out = 0, []
        for epoch in range(every, epochs + 1, every):
            if grid_epoch(epoch, last):
                last = epoch
                out.append(epoch)
        return out

    assert written(1) == [*range(1, 11), *range(20, 101, 10), *range(200, 1001, 100)]
    # one per ten epochs to 100 (28 and 49 share a ten with 21 and 42), one per hundred after
    assert written(7) == [7, 14, 21, 35, 42, 56, 63, 70, 84, 91, 105, 203, 301, 406, 504, 602, 700, 805, 903]


def test_an_old_run_resumed_trains_to_its_end(tmp_path):
    from edgevae.train.checkpoint import resume_config

    out, _ = run(tmp_path)
    ckpt = load(out / LAST)
    del ckpt["config"]["patience"]  # as a run saved before --patience
    torch.save(ckpt, out / LAST)
    assert resume_config(TrainConfig, str(out), {"epochs": 4}).patience == 0


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    _, a = run(tmp_path, "a")
    _, b = run(tmp_path, "b")
    _, c = run(tmp_path, "c", seed=1)
    assert untimed(a) == untimed(b)
    assert untimed(a) != untimed(c)


@pytest.mark.parametrize("overrides", [dict(), dict(binarize=True, kl_warmup=2, epochs=4)])
def test_resume_continues_exactly(tmp_path, overrides):
    """N epochs straight == N/2 epochs, then --resume to N: the same metrics and the same weights.

    (Not with --schedule cosine: its curve spans --epochs, so a run planned for N/2 epochs decays
    differently; the Ctrl-C test below covers a schedule.)
    """
    epochs = overrides.pop("epochs", 2)
    straight, rows = run(tmp_path, "straight", epochs=epochs, **overrides)
    split, _ = run(tmp_path, "split", epochs=epochs // 2, **overrides)
    assert load(split / LAST)["epoch"] == epochs // 2
    _, resumed = run(tmp_path, "split", epochs=epochs, resume=True, **overrides)
    assert untimed(resumed) == untimed(rows)
    a, b = load(straight / LAST)["model"], load(split / LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _ctrl_c_at(epoch_at: int, batch_at: int):
    """on_step that presses Ctrl-C after that step: SIGINT, delivered to training's handler as a user's would be."""
    def on_step(epoch, batch, model):
        if (epoch, batch) == (epoch_at, batch_at):
            signal.raise_signal(signal.SIGINT)

    return on_step


def test_ctrl_c_saves_mid_epoch_and_resume_finishes_identically(tmp_path):
    cosine = dict(SMALL, schedule="cosine")
    straight, rows = run(tmp_path, "straight", schedule="cosine")

    with pytest.raises(Interrupted, match="continue with --resume"):
        train(TrainConfig(out=str(tmp_path / "split"), **cosine), on_step=_ctrl_c_at(2, 1))
    saved = load(tmp_path / "split" / LAST)
    assert (saved["epoch"], saved["next_batch"]) == (1, 2)
    _, resumed = run(tmp_path, "split", resume=True, schedule="cosine")
    assert untimed(resumed) == untimed(rows)
    a, b = load(straight / LAST)["model"], load(tmp_path / "split" / LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(epoch, batch, model):
        if epoch == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(FloatingPointError, match=r"not finite at epoch 2, batch 2/.*last good checkpoint"):
        train(TrainConfig(out=str(tmp_path / "run"), **SMALL), on_step=poison)
    ckpt = load(tmp_path / "run" / LAST)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def _nan_gradients(bad):
    """on_step that, at its first call, hooks the first parameter so that its gradient is NaN at the n-th backward
    after that for which bad(n) (0-based): the loss stays finite, as when a likelihood's unused branch is infinite."""
    state = {"n": 0, "hooked": False}

    def hook(grad):
        state["n"] += 1
        return grad * float("nan") if bad(state["n"] - 1) else grad

    def on_step(epoch, batch, model):
        if not state["hooked"]:
            next(model.parameters()).register_hook(hook)
            state["hooked"] = True

    return on_step


def test_a_non_finite_gradient_skips_its_step_and_keeps_the_weights(tmp_path, capsys):
    # with clipping on, a NaN gradient (steps 3 and 5) is skipped, with one warning, and training goes on
    config = dict(SMALL, grad_clip=1.0, out=str(tmp_path / "run"))
    out = train(TrainConfig(**config), on_step=_nan_gradients(lambda n: n in (2, 4)))
    log = "".join(capsys.readouterr())
    assert log.count("the gradient is not finite at epoch 1, batch 4/5: that step is skipped") == 1
    assert "batch 6/5" not in log and log.count("the gradient is not finite") == 1  # said once
    ckpt = load(out / LAST)
    assert ckpt["epoch"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert ckpt["step"] == 2 * 5 - 2  # 160 images: 5 batches an epoch, two steps skipped
    # a gradient that stays non-finite: after MAX_SKIPPED steps in a row the run goes back to its last evaluated
    # weights with half the learning rate, MAX_ROLLBACKS times, then stops with the weights it had
    from edgevae.train.loop import MAX_ROLLBACKS, MAX_SKIPPED
    capsys.readouterr()
    with pytest.raises(FloatingPointError, match=rf"gradient is not finite at epoch .*{MAX_SKIPPED} steps before"
                                                 r" it \(skipped\).*last good checkpoint") as stopped:
        train(TrainConfig(**dict(config, epochs=30, resume=True)), on_step=_nan_gradients(lambda n: True))
    log = "".join(capsys.readouterr())
    assert log.count("the weights and optimizer state went back to epoch") == MAX_ROLLBACKS
    assert f"is x{0.5 ** MAX_ROLLBACKS:g} for the rest of the run (rollback {MAX_ROLLBACKS} of" in log
    ckpt = load(out / LAST)
    assert f"(epoch {ckpt['epoch']})" in str(stopped.value) and ckpt["epoch"] > 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


@pytest.mark.parametrize("val_fraction", [0.1, 0.0])  # without a validation split the test split's -ELBO tells
def test_a_model_gone_bad_goes_back_to_its_last_evaluated_weights_and_trains_on(tmp_path, capsys, val_fraction):
    # the model itself breaks at epoch 3 (a weight made NaN, as an overflowing step would): every later batch's loss
    # is non-finite and so is epoch 3's evaluation, so the run restores epoch 2's weights and optimizer state and
    # finishes at half the learning rate, instead of ending with an error; nothing of epoch 3 is written
    def poison(epoch, batch, model):
        if (epoch, batch) == (3, 0):
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    config = TrainConfig(**dict(SMALL, grad_clip=1.0, epochs=8, val_fraction=val_fraction, out=str(tmp_path / "run")))
    out = train(config, on_step=poison)
    log = "".join(capsys.readouterr())
    assert log.count("the loss is not finite at epoch 3, batch 2/5: that step is skipped") == 1
    assert ("warning: the evaluation of epoch 3 is not finite: the weights and optimizer state went back to epoch 2's "
            "and the learning rate is x0.5 for the rest of the run (rollback 1 of at most 3)") in log
    ckpt = load(out / LAST)
    assert ckpt["epoch"] == 8 and ckpt["lr_scale"] == 0.5
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert ckpt["step"] == 8 * 5 - 4  # epoch 3's batches 2 to 5 were skipped
    assert [row["epoch"] for row in ckpt["history"]] == [1, 2, 4, 5, 6, 7, 8]


def test_a_stop_after_a_mid_epoch_save_names_that_save(tmp_path):
    # Ctrl-C saves checkpoint.pt inside epoch 2; a NaN loss after --resume, before the next evaluation, must point
    # at that save, not at the last evaluated epoch
    config = dict(SMALL, out=str(tmp_path / "run"))
    with pytest.raises(Interrupted):
        train(TrainConfig(**config), on_step=_ctrl_c_at(2, 1))

    def poison(epoch, batch, model):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))

    with pytest.raises(FloatingPointError, match=r"last good checkpoint .*\(epoch 1, then batch 2/5 of epoch 2\)"):
        train(TrainConfig(**config, resume=True), on_step=poison)


def test_resume_refuses_a_different_config(tmp_path):
    run(tmp_path, epochs=1)
    with pytest.raises(ValueError, match=r"--lr 0.01 \(checkpoint: 0.001\)"):
        run(tmp_path, epochs=2, lr=0.01, resume=True)


def test_an_old_gaussian_run_resumes_with_its_sigmoid_mean_and_refuses_another(tmp_path):
    """A run saved before --gaussian-mean was trained with a sigmoid mean: resumed, it keeps it, and asking for
    the linear mean is refused like any other change of model (checkpoint.check_resume compares the migrated
    config); before, the missing key let it through and the weights went on under another mean."""
    from edgevae.train.checkpoint import resume_config

    out, _ = run(tmp_path, likelihood="gaussian", epochs=1)
    ckpt = load(out / LAST)
    del ckpt["config"]["gaussian_mean"]  # as a run saved before --gaussian-mean
    torch.save(ckpt, out / LAST)
    assert resume_config(TrainConfig, str(out), {"epochs": 2}).gaussian_mean == "sigmoid"
    with pytest.raises(ValueError, match=r"--gaussian-mean 'linear' \(checkpoint: 'sigmoid'\)"):
        run(tmp_path, likelihood="gaussian", epochs=2, gaussian_mean="linear", resume=True)
    resumed = train(resume_config(TrainConfig, str(out), {"epochs": 2}))
    assert load(resumed / LAST)["epoch"] == 2 and load(resumed / LAST)["config"]["gaussian_mean"] == "sigmoid"


def test_a_time_budget_without_epochs_trains_until_the_budget(tmp_path, capsys):
    from edgevae.train.config import BUDGET_EPOCHS, DEFAULT_EPOCHS

    assert TrainConfig().epochs == DEFAULT_EPOCHS == 10 and TrainConfig(minutes=5, epochs=3).epochs == 3
    # --minutes alone: the budget ends the run, not a 10-epoch cap (which ended 20-minute runs after 2 minutes)
    config = TrainConfig(out=str(tmp_path / "run"), **{**SMALL, "epochs": 0, "minutes": 0.04})
    assert config.epochs == BUDGET_EPOCHS
    out = train(config)
    said = capsys.readouterr().out
    assert "time budget of 0.04 minutes reached" in said and "epoch   1  train loss" in said  # no "/1048576"
    assert load(out / "checkpoint.pt")["epoch"] >= 1
    saved = load(out / "checkpoint.pt")["config"]
    assert saved["epochs"] == 0 and json.loads((out / "config.json").read_text())["epochs"] == 0  # not 1048576
    assert TrainConfig.from_dict(saved).epochs == BUDGET_EPOCHS
    with pytest.raises(ValueError, match="trains to a --minutes budget, not an epoch count"):
        TrainConfig.from_dict({**saved, "epochs": BUDGET_EPOCHS, "minutes": 0})  # e.g. --resume --minutes 0


def test_flip_augmentation_mirrors_about_half_the_batch_and_is_seeded():
    from edgevae.train import ddp
    from edgevae.train.loop import draw_batch

    images = torch.randint(0, 256, (64, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels, idx, one = torch.zeros(64, dtype=torch.long), torch.arange(64), ddp.Dist(0, 1, torch.device("cpu"))

    def batch(augment):
        return draw_batch(TrainConfig(augment=augment), images, labels, idx, torch.Generator().manual_seed(1), one,
                          (4,))[0]

    plain, flipped = batch("none"), batch("flip")
    original = images.float() / 255
    assert torch.equal(plain, original)
    mirrored = [bool(torch.equal(f, o.flip(-1))) for f, o in zip(flipped, original)]
    kept = [bool(torch.equal(f, o)) for f, o in zip(flipped, original)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 16 < sum(mirrored) < 48  # each image whole, ~1/2 mirrored
    assert torch.equal(batch("flip"), flipped)  # the run's generator decides: the same seed, the same flips


def test_continuous_bernoulli_batches_are_dequantized_into_their_levels_bins_and_seeded():
    """--likelihood continuous-bernoulli trains and validates on level k spread over [k, k + 1) / 256: no pixel is
    exactly 0 or 1, where its density is unbounded (train/likelihood.py dequantize); other likelihoods see the
    levels."""
    from edgevae.train import ddp
    from edgevae.train.loop import draw_batch

    images = torch.randint(0, 256, (64, 4, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images[:, :, 0] = 0  # transparent rows: exactly 0
    images[:, :, 1] = 255
    labels, idx, one = torch.zeros(64, dtype=torch.long), torch.arange(64), ddp.Dist(0, 1, torch.device("cpu"))

    def batch(likelihood):
        config = TrainConfig(augment="none", likelihood=likelihood)
        return draw_batch(config, images, labels, idx, torch.Generator().manual_seed(1), one, (4,))[0]

    x = batch("continuous-bernoulli")
    k = images.float()
    assert (x * 256 >= k).all() and (x * 256 < k + 1).all()  # inside its own level's bin
    assert x.min() > 0 and x.max() < 1 and (x * 256 - k).std() > 0.25  # uniform in the bin: std 1/sqrt(12) = 0.29
    assert torch.equal(batch("continuous-bernoulli"), x)  # the run's generator decides
    assert torch.equal(batch("logistic"), k / 255)  # the levels themselves


def test_overfitting_is_warned_once_when_validation_stays_up():
    from types import SimpleNamespace

    from edgevae.train.loop import OVERFIT, best_row, overfitting

    run = SimpleNamespace(warned=set(), data=SimpleNamespace(train_x=torch.zeros(667, 1)),
                          config=SimpleNamespace(patience=-1))
    rows = lambda *vals: [{"epoch": 5 * (i + 1), "val_neg_elbo": v} for i, v in enumerate(vals)]  # noqa: E731
    high = 100 + OVERFIT * 100 + 1  # more than a tenth of the fall from 200 to 100 given back
    # one evaluation far above the lowest is noise (early epochs jump about): nothing said
    assert overfitting(run, SimpleNamespace(history=rows(200, 100, 150, 99, 101, 98))) == []
    assert overfitting(run, SimpleNamespace(history=rows(200, 100, 109, 109, 109))) == []  # within a tenth
    # a first evaluation already near the floor: 0.04 nats of noise is not "40% given back"
    assert overfitting(run, SimpleNamespace(history=rows(102.60, 102.50, 102.53, 102.52, 102.54))) == []
    state = SimpleNamespace(history=rows(200, 100, high, high, high))
    assert best_row(state.history)["epoch"] == 10
    said = overfitting(run, state)
    assert len(said) == 1
    assert said[0].startswith("overfitting: validation -ELBO 111.0 has given back 11% of its fall from 200.0 to its "
                              "lowest (100.0, epoch 10)")
    assert "667 images" in said[0] and "best.pt keeps epoch 10" in said[0]
    state.history += rows(200)
    assert overfitting(run, state) == []  # once per run
    # a Gaussian decoder's -ELBO is a density's: negative, with no zero to be a percentage of; the same rule holds
    run.warned.clear()
    negative = SimpleNamespace(history=rows(-100, -414, -414, -410, -414))  # noise, not learning by heart
    assert overfitting(run, negative) == []
    negative.history += rows(-300, -300, -300)
    assert "given back 36% of its fall from -100.0 to its lowest (-414.0" in overfitting(run, negative)[0]
    assert best_row([{"epoch": 1, "test_neg_elbo": 5}]) is None  # no validation split: no best.pt choice to explain


def test_with_clipping_an_overflowing_loss_skips_its_batch(tmp_path, capsys):
    # one batch whose loss is infinite (an unlucky eps through a large decoder) is skipped, not the end of the run;
    # the weights stay finite and the next batches train
    calls = {"n": 0}

    def overflow(module, inputs, output):
        if module.training:
            calls["n"] += 1
            if calls["n"] == 3:
                return output * float("inf")
        return output

    def on_step(epoch, batch, model):
        if not calls.get("hooked"):
            model.decoder.register_forward_hook(overflow)
            calls["hooked"] = True

    out = train(TrainConfig(**dict(SMALL, grad_clip=1.0, out=str(tmp_path / "run"))), on_step=on_step)
    log = "".join(capsys.readouterr())
    assert log.count("the loss is not finite at epoch 1, batch 4/5: that step is skipped") == 1
    ckpt = load(out / LAST)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * 5 - 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_reconstructions_that_lose_colour_are_said_at_the_end():
    # Detailed sprites came back blurred to one brown-grey (55-65% of their colour saturation kept) where Twemoji's
    # default kept 97%: the end of the run says so, with the spatial latent's flags for this image size.
    from types import SimpleNamespace

    from edgevae.train.loop import COLOUR_KEPT, colour_lost, visible_chroma

    x = torch.zeros(1, 4, 2, 2)
    x[0, :3, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # red, visible: chroma 1
    x[0, :3, 1, 1] = torch.tensor([0.0, 1.0, 0.0])  # green, invisible: not counted
    x[0, 3, 0] = 1.0
    assert visible_chroma(x).item() == 1.0
    grey = x.clone()
    grey[:, :3] = 0.5
    assert visible_chroma(grey, like=x).item() == 0.0
    assert visible_chroma(x[:, :3]).item() == 2.0  # RGB: every pixel
    config = SimpleNamespace(widths=(), latent_channels=2, likelihood="logistic")
    said = colour_lost({"val_colour_kept": 0.53}, config, (4, 72, 72), (2, 9, 9), "best.pt (epoch 79)")
    assert said.startswith("colour lost: best.pt (epoch 79)'s reconstructions keep 53% of the colour saturation")
    assert "--arch resnet --latent-channels 3 --widths 16,32,64:" in said  # 72 x 72: 3 x 18 x 18, the default
    assert colour_lost({"val_colour_kept": COLOUR_KEPT}, config, (4, 72, 72), (2, 9, 9), "x") is None
    assert colour_lost({"val_neg_elbo": 1.0}, config, (1, 28, 28), (16,), "x") is None  # grey: not measured
    spatial = SimpleNamespace(widths=(16, 32, 64), latent_channels=4, likelihood="logistic")
    assert "spatial latent" not in colour_lost({"val_colour_kept": 0.5}, spatial, (4, 72, 72), (4, 18, 18), "x")
    # The continuous Bernoulli loses colour whatever the latent (66% against 84% for the logistic, on sprites):
    # the likelihood is named, not the latent
    said = colour_lost({"val_colour_kept": 0.66}, SimpleNamespace(widths=(16, 32, 64), latent_channels=4,
                                                                    likelihood="continuous-bernoulli"),
                       (4, 56, 68), (4, 14, 17), "best.pt (epoch 58)")
    assert said == ("colour lost: best.pt (epoch 58)'s reconstructions keep 66% of the colour saturation of the "
                    "held-out images: the continuous Bernoulli washes colours out; --likelihood logistic, the "
                    "default for colour images, keeps more")


def test_gaussian_on_mostly_transparent_images_keeps_its_latent(tmp_path, colour_npz):
    """RGBA shapes on a transparent background (78% of the subpixels exactly 0): the calibrated Gaussian's linear
    mean trains a latent that reconstructs them. The sigmoid mean of runs saved before saturated here (the
    decoder's outputs pushed far below 0, where its gradient vanishes) and collapsed within 4 epochs, as it did on
    1,352 RGBA sprites: measured on seeds 0-2, at most 7 units active and a validation PSNR of 10.7 dB at most,
    against 151-204 units and 14.6-15.2 dB for the linear mean."""
    common = dict(data=str(colour_npz(4)), arch="resnet", widths=(8, 16), likelihood="gaussian", epochs=4,
                  batch_size=32, seed=0, prior_fit="none")
    rows = {}
    for mean in ("linear", "sigmoid"):
        out = train(TrainConfig(out=str(tmp_path / mean), gaussian_mean=mean, **common))
        rows[mean] = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert load(out / LAST)["config"]["gaussian_mean"] == mean
    assert rows["linear"]["active_units"] >= 50 and rows["linear"]["val_psnr_db"] >= 13.0
    assert rows["sigmoid"]["val_psnr_db"] < 12.0  # the old mean, for contrast: a constant image
