"""The training loop: in-memory data batched by index, Adam, per-epoch metrics, grids and checkpoints.

    edgevae train --data shapes --epochs 10 --out runs/shapes          # one process
    torchrun --nproc_per_node=2 -m edgevae train --data shapes --out runs/ddp     # DDP (train/ddp.py)

A run directory holds config.json, checkpoint.pt and best.pt (train/checkpoint.py), metrics.jsonl,
samples/ and recon/ grids and loss.png (train/report.py), and for an image folder split.json (which files were
trained on, validated on and held out for testing).

Everything random comes from generators seeded by --seed: weights (torch.manual_seed), then one
generator for image order, noise eps and binarization, drawn for the whole global batch in every
process (each keeps its share), so one process and N processes see the same numbers. Ctrl-C (or
SIGTERM) finishes the current step, saves checkpoint.pt mid-epoch and exits; `--resume` continues
from exactly there. A non-finite loss stops before the step is taken, leaving the last checkpoint; with
--grad-clip, a step whose loss or gradient is not finite is skipped, and a run of them goes back to the last
evaluated weights with half the learning rate (_skip_step).
With --minutes, the first step past the budget ends the epoch early; it is evaluated and saved as usual.

Every epoch the latent is checked on the validation images (train/diagnostics.py): posterior collapse
and latents far from N(0, I) print a one-line warning with what to try; the check is saved in the
checkpoint as "diagnostics".
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from . import auto, checkpoint, ddp, prior, report
from . import data as data_sources
from . import model as models
from .config import BUDGET_EPOCHS
from .diagnostics import diagnose
from .elbo import Objective, latent_shape_of
from .likelihood import dequantize, dequantized

REFERENCE_IMAGES = 256  # test images (and labels) stored in the checkpoint, so export can verify on real data
GRID_IMAGES = 64  # images per sample / reconstruction grid
# loss.png is redrawn at most every LOSS_PLOT_SECONDS, and at the end: matplotlib takes ~0.35 s a drawing, which was
# 60% of a small folder's epoch (584 sprites, 32 x 32: 0.58 s) when drawn at every evaluation
LOSS_PLOT_SECONDS = 30.0
EVAL_BATCH = 64  # images per evaluation forward pass: on CPU, 520 72 x 72 RGBA images took 0.56 s in batches of 64,
# 1.0 s of 256, 1.4 to 1.7 s of 1024 (the activations of a large batch leave the caches)
EVAL_SEED = 7_777  # evaluation noise: batch b uses a generator seeded EVAL_SEED + b, the same every epoch and run
FIXED_Z_STREAM = 1  # added to --seed for the sample grids' fixed z
MAX_SKIPPED = 10  # consecutive steps skipped for a non-finite gradient before the run stops (--grad-clip > 0)
MAX_ROLLBACKS = 3  # ... or goes back to its last evaluated weights with half the learning rate, this often at most
DIAGNOSIS_IMAGES = 2048  # validation (or test) images the per-epoch latent check encodes
# the share of its fall (first evaluation -> lowest) the validation -ELBO has given back ... A share, not a percentage
# of the value: a Gaussian decoder's -ELBO is a density's, with no zero to be a percentage of (-414 nats on 283
# sprites). Given back by a run's end (metrics.jsonl): 823 KDE icons, dense latent 126% (the 2 x 8 x 8 grid 0.2%);
# Twemoji's default 2.1%; 349 Wesnoth sprites, 20 minutes each, 8.5% and (invisible colour cleared) 38.7%
OVERFIT = 0.10
OVERFIT_FLOOR = 0.01  # ... and a rise of at least this share of the lowest's size: a run whose first evaluation is
# already near its floor (102.60 -> 102.50) would otherwise call 0.04 nats of noise "40% given back"
OVERFIT_EVALUATIONS = 3  # ... at this many evaluations in a row: warned about once (memorising, not learning)
SPLIT_FILE = "split.json"  # an image folder's files per part, relative to its root: {"root", "train", "val", "test"}
# Reconstructions of colour images should keep their colour: the mean chroma (max - min of R, G, B) of visible
# pixels in decode(mu) over that of the images, on the validation split at best.pt's epoch. Twemoji's default run
# kept 0.965 (its spatial latent 0.992); on 349 detailed Wesnoth sprites the default kept 0.548 and 0.653 (20-minute
# runs; their detail blurred to one brown-grey), a 4 x 18 x 18 spatial latent 0.772
COLOUR_KEPT = 0.75  # below this, the run's end says so and what keeps more
LR_WARMUP_STEPS = 200  # at most this many steps (else one epoch) of learning-rate warm-up without normalization


def flush_denormals(on: bool = True) -> None:
    """Subnormal floats (under 1.2e-38) read and written as zero in this thread, and in the threads it creates
    while on; train() turns it on for its run and off again after, so the calling process keeps IEEE arithmetic.

    Without normalization layers (--norm none) the backward pass makes many, and a CPU takes far longer on each:
    one training step of a 56 x 68 RGBA model took 0.68 s on 2 threads with them and 0.27 s without. torch's worker
    threads copy the setting when they are created, so a process whose first parallel op is training (the CLI) gets
    it everywhere; one that ran torch before keeps its workers as they were (correct, slower). A float32 model cannot
    show values under 1e-38 (TensorFlow flushes them in its CPU threads by default).
    """
    torch.set_flush_denormal(on)


class Interrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C / SIGTERM after saving; str() says where and how to continue."""


class StopSignal:
    """First SIGINT/SIGTERM: finish the step, save, stop. A second one aborts at once."""

    def __init__(self):
        self.requested, self._previous = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step to save a checkpoint (again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]."""
    return x.float().div_(255.0)


def lr_at(config, epoch: int, progress: float | None = None) -> float:
    """Learning rate for epoch (1-based): constant, or cosine from lr to 0 over --epochs -- or, with --minutes,
    over the time budget, `progress` being the fraction of it used."""
    if config.schedule == "cosine":
        done = min(progress, 1.0) if config.minutes and progress is not None else (epoch - 1) / config.epochs
        return config.lr * 0.5 * (1 + math.cos(math.pi * done))
    return config.lr


def warmed(lr: float, config, step: int, steps_per_epoch: int) -> float:
    """lr ramped linearly over the first epoch (at most LR_WARMUP_STEPS optimizer steps) for a network without
    normalization (--arch resnet --norm none), else lr. Adam's first steps move every weight by about lr at once;
    GroupNorm made the network blind to that scale, and without it the decoder's output went from 0.65 to 101 in
    two steps on Twemoji (lr 2e-3) and the loss overflowed. Warm-up is the usual cure (Goyal et al. 2017)."""
    if config.arch != "resnet" or config.norm != "none":
        return lr
    return lr * min(1.0, (step + 1) / min(LR_WARMUP_STEPS, steps_per_epoch))


def beta_at(config, step: int, steps_per_epoch: int) -> float:
    """KL weight for optimizer step `step` (0-based): linear warm-up over --kl-warmup epochs, then --beta."""
    if config.kl_warmup <= 0:
        return config.beta
    return config.beta * min(1.0, step / (config.kl_warmup * steps_per_epoch))


def draw_batch(config, images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, gen: torch.Generator,
               dist: ddp.Dist, latent_shape: tuple[int, ...]):
    """This process's (x, y, eps) of the global batch idx; noise is drawn for all of idx, then shared out."""
    iwae = config.iwae_k > 1
    eps = torch.randn(((config.iwae_k,) if iwae else ()) + (len(idx), *latent_shape), generator=gen)
    spread = dequantized(config.likelihood)
    uniform = torch.rand(len(idx), *images.shape[1:], generator=gen) if config.binarize or spread else None
    flip = torch.rand(len(idx), generator=gen) < 0.5 if config.augment == "flip" else None  # no draw without it
    mine = torch.arange(dist.rank, len(idx), dist.world)
    x = to_unit(images[idx[mine]])
    if flip is not None:
        x = torch.where(flip[mine].view(-1, 1, 1, 1), x.flip(-1), x)
    x = x.contiguous(memory_format=torch.channels_last)  # (b, C, H, W), NHWC in memory
    if config.binarize:
        x = (uniform[mine] < x).float()  # dynamic binarization: a Bernoulli(x) sample
    elif spread:
        x = dequantize(x, uniform[mine])
    return x.to(dist.device), labels[idx[mine]].to(dist.device), eps.index_select(int(iwae), mine).to(dist.device)


@torch.no_grad()
def evaluate(objective: Objective, config, x: torch.Tensor, y: torch.Tensor, dist: ddp.Dist) -> dict:
    """Mean negative ELBO, reconstruction NLL and KL per image (and the IWAE bound when k > 1), seeded noise.

    Batches are shared out over processes and their sums added, so the result does not depend on N.
    """
    objective.eval()
    totals = torch.zeros(4, dtype=torch.float64)
    latent_shape = latent_shape_of(objective.model)
    for b, start in enumerate(range(0, len(x), EVAL_BATCH)):
        if b % dist.world != dist.rank:
            continue
        gen = torch.Generator().manual_seed(EVAL_SEED + b)
        xb = to_unit(x[start:start + EVAL_BATCH])
        if config.binarize:
            xb = (torch.rand(xb.shape, generator=gen) < xb).float()
        elif dequantized(config.likelihood):
            xb = dequantize(xb, torch.rand(xb.shape, generator=gen))
        xb, yb = xb.to(dist.device), y[start:start + EVAL_BATCH].to(dist.device)
        _, neg_elbo, recon, kl = objective(xb, torch.randn(len(xb), *latent_shape, generator=gen).to(dist.device), yb)
        totals[:3] += torch.stack([neg_elbo.sum(), recon.sum(), kl.sum()]).double().cpu()
        if config.iwae_k > 1:
            eps = torch.randn(config.iwae_k, len(xb), *latent_shape, generator=gen).to(dist.device)
            totals[3] += objective(xb, eps, yb)[0].sum().double().cpu()
    objective.train()
    totals = dist.all_sum(totals) / max(len(x), 1)
    row = dict(zip(("neg_elbo", "recon", "kl"), totals[:3].tolist()))
    if config.iwae_k > 1:
        row["neg_iwae"] = totals[3].item()
    return row


@dataclass
class TrainState:
    """Where a run stands: what --resume needs besides the weights, the optimizer and the generator."""
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    next_batch: int = 0  # 0 at an epoch boundary; else the batch to continue from (saved mid-epoch on Ctrl-C)
    order: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))  # this epoch's order
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(4, dtype=torch.float64))  # partial epoch totals
    best: float = math.inf  # lowest validation score so far (picks best.pt)
    history: list = field(default_factory=list)  # one metrics row per completed epoch

    def to_checkpoint(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_checkpoint(cls, saved: dict) -> TrainState:
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls)})

    def start_epoch(self, n: int, gen: torch.Generator) -> None:
        """A fresh order and totals, unless the epoch is being continued after an interruption."""
        if self.next_batch == 0:
            self.order, self.sums = torch.randperm(n, generator=gen), torch.zeros(4, dtype=torch.float64)


@dataclass
class Run:
    """One training run's fixed parts: config, data, model, optimizer, the batching generator, where it writes."""
    config: object
    dist: ddp.Dist
    data: object
    model: torch.nn.Module
    objective: Objective
    trainer: torch.nn.Module  # the objective, wrapped by DDP under torchrun
    optimizer: torch.optim.Optimizer
    gen: torch.Generator
    out: Path
    reference_x: torch.Tensor  # test images (and labels) kept in the checkpoint for export's checks
    reference_y: torch.Tensor
    started: float = field(default_factory=time.perf_counter)  # when training began: --minutes counts from here
    diagnostics: dict = field(default_factory=dict)  # the last latent check (train/diagnostics.py)
    spent: bool = False  # the --minutes budget is used up (the main process's clock, shared by all)
    warned: set = field(default_factory=set)  # latent problems (and a skipped step) already warned about
    skipped: int = 0  # consecutive optimizer steps skipped for a non-finite gradient
    saved_at: str = ""  # what checkpoint.pt on disk holds (_position), for error messages
    prior_fit: dict | None = None  # the last fitted prior (train/prior.py), saved beside the trained weights
    plotted: tuple[float, int] = (-math.inf, 0)  # when loss.png was last drawn, and from how many evaluations
    last_grid: int = 0  # the epoch of the last samples/ and recon/ grids written (grid_epoch)
    good: tuple | None = None  # (epoch, model state, optimizer state) copied at the last finite evaluation
    lr_scale: float = 1.0  # halved at each rollback (_skip_step), for the rest of the run
    bfloat16: bool = False  # training steps' convolutions in bfloat16 (--precision; `bfloat16_steps`)
    rollbacks: int = 0

    def progress(self) -> float:
        """Fraction of the --minutes budget used (0 without a budget)."""
        return (time.perf_counter() - self.started) / (60 * self.config.minutes) if self.config.minutes else 0.0

    @property
    def batches(self) -> int:
        return math.ceil(len(self.data.train_x) / self.config.batch_size)

    def fit_prior(self) -> None:
        """With --prior-fit gaussian or mixture, fit the prior to the current weights (train/prior.py), for the next
        save."""
        if prior.wanted(self.config):
            self.prior_fit = prior.fit(self.model, self.data.train_x, self.data.train_y, seed=self.config.seed,
                                       binarize=self.config.binarize, mixture=self.config.prior_fit == "mixture")

    def checkpoint(self, state: TrainState) -> dict:
        """Everything checkpoint.pt holds (train/checkpoint.py lists it)."""
        return {"config": self.config.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "generator": self.gen.get_state(),
                "metrics": state.history[-1] if state.history else {}, "dataset": self.data.name,
                "image_shape": list(self.data.image_shape), "classes": list(self.data.classes),
                "reference_x": self.reference_x, "reference_y": self.reference_y, "kind": self.config.model,
                "diagnostics": self.diagnostics, **({"prior_fit": self.prior_fit} if self.prior_fit else {}),
                "lr_scale": self.lr_scale, "rollbacks": self.rollbacks, **state.to_checkpoint()}

    def keep_good(self, epoch: int) -> None:
        """Copy the weights and optimizer state, evaluated finite at `epoch`, to the CPU for a rollback (_roll_back)."""
        self.good = (epoch, _on_cpu(self.model.state_dict()), _on_cpu(self.optimizer.state_dict()))


def train(config, on_step=None) -> Path:
    """Train the model `config` describes; returns the run directory.

    on_step(epoch, batch, model), if given, is called after every optimizer step (progress hooks, tests).
    Raises Interrupted after saving on Ctrl-C / SIGTERM; FloatingPointError on a non-finite loss, or after
    MAX_SKIPPED non-finite gradients in a row (with --grad-clip; one is skipped).
    """
    flush_denormals()
    dist = ddp.setup(config.device)
    try:
        with StopSignal() as stop:
            return _train(config, dist, stop, on_step)
    finally:
        dist.close()
        flush_denormals(False)


def _train(config, dist: ddp.Dist, stop: StopSignal, on_step) -> Path:
    log = print if dist.is_main else (lambda *args, **kwargs: None)
    started = time.perf_counter()
    run = build_run(config, dist, log)
    run.started = started
    config = run.config  # auto choices made
    state = resume(run, log) if config.resume else TrainState()
    if config.resume:
        run.keep_good(state.epoch)  # what a rollback goes back to until the next evaluation
    if state.epoch == config.epochs and not state.next_batch:  # resuming a finished run: say so, change nothing
        log(f"nothing to do: {run.out} already has {state.epoch} of {config.epochs} epochs; "
            f"pass --epochs N with N > {state.epoch} to train longer")
        return run.out
    stopped = early_stop(config, state.history) if config.resume and not state.next_batch else None
    if stopped:  # resuming a run that stopped early, under the same rule: it would stop again after one epoch
        log(f"nothing to do: {run.out} stopped early after epoch {state.epoch}: {stopped}")
        return run.out
    if dist.is_main:
        for sub in ("samples", "recon"):
            (run.out / sub).mkdir(parents=True, exist_ok=True)
        (run.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        if run.data.files is not None:  # which of a folder's files were trained on and which held out
            (run.out / SPLIT_FILE).write_text(json.dumps(run.data.files, indent=1) + "\n")
        report.write_metrics(run.out / "metrics.jsonl", state.history)
    data, model = run.data, run.model
    log(f"training {config.model} ({config.arch}{', conditional' if model.conditional else ''}, {config.likelihood}) "
        f"on {data.name}: {len(data.train_x)} train / {len(data.val_x)} val / {len(data.test_x)} test images "
        f"{'x'.join(map(str, data.image_shape))}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"device {dist.device}" + (", bfloat16 steps" if run.bfloat16 else "")
        + (f", {dist.world} processes" if dist.world > 1 else ""))
    if config.model == "vae" and config.latent_channels and not prior.wanted(config):
        log(f"a spatial latent ({'x'.join(map(str, model.latent_shape))}) without a fitted prior: its prior "
            f"samples will not look like your images; --prior-fit mixture fits one (to a latent of at most "
            f"{prior.FIT_MAX_DIM:,} numbers)")
    try:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            start, first = time.perf_counter(), state.next_batch
            train_epoch(run, state, epoch, stop, on_step)
            if not (epoch % config.eval_every == 0 or epoch == config.epochs or run.spent):
                state.epoch, state.next_batch = epoch, 0
                continue  # evaluated, drawn and saved every --eval-every epochs, and at the end
            row = epoch_metrics(run, state, epoch, time.perf_counter() - start, first)
            if not (math.isfinite(row.get("val_neg_elbo", row["test_neg_elbo"])) and math.isfinite(row["train_loss"])
                    and all(bool(torch.isfinite(p).all()) for p in run.model.parameters())):  # gone bad: nothing
                state.epoch, state.next_batch = epoch, 0  # of it is written (no checkpoint, grid or prior fit)
                if _roll_back(run, f"the evaluation of epoch {epoch} is not finite"):
                    continue
                raise FloatingPointError(f"the evaluation of epoch {epoch} is not finite; stopped without saving: "
                                         f"{_last_saved(run)}. Try a lower --lr")
            warnings = check_latent(run, row, settled=row["beta"] >= config.beta)
            row["seconds"] = round(time.perf_counter() - start, 3)
            state.history.append(row)
            state.epoch, state.next_batch = epoch, 0
            score = row.get("val_neg_elbo", row["train_loss"])
            improved, state.best = score < state.best, min(score, state.best)
            stopping = early_stop(config, state.history)
            run.keep_good(epoch)
            if dist.is_main:
                write_epoch(run, state, row, improved, last=epoch == config.epochs or run.spent or stopping is not None)
            dist.barrier()
            # the validation split's -ELBO when there is one: what *best and best.pt follow (the test split's, with
            # every other figure, is in metrics.jsonl)
            held, score = ("val", row["val_neg_elbo"]) if "val_neg_elbo" in row else ("test", row["test_neg_elbo"])
            psnr = row.get(f"{held}_psnr_db")
            log(f"epoch {epoch:3d}{_of(config)}  train loss {row['train_loss']:8.3f}  "
                f"{held} -ELBO {score:8.3f}  KL {row[f'{held}_kl']:6.3f}  "
                + ("" if psnr is None else f"PSNR {psnr:5.2f} dB  ") + f"({time.perf_counter() - start:.1f} s)"
                + ("  *best" if improved and "val_neg_elbo" in row else ""))
            for line in warnings + overfitting(run, state, stopping=stopping is not None):
                log(f"warning: {line}")
            if run.spent:
                log(f"time budget of {config.minutes:g} minutes reached: stopped after epoch {epoch} "
                    f"({state.step} steps, {time.perf_counter() - run.started:.0f} s)")
                break
            if stopping:
                log(f"stopped early after epoch {epoch}: {stopping}")
                break
    finally:  # loss.png shows every evaluation however the run ends (Ctrl-C, a non-finite loss, ...)
        if dist.is_main and state.history and run.plotted[1] != len(state.history):
            report.loss_curve(state.history, run.out / "loss.png")
    if run.diagnostics:
        d = run.diagnostics
        if run.prior_fit and d.get("far_from_prior") and not d.get("collapsed"):  # what the fit below is for
            log(f"latent: {d['active_units']} of {d['latent_dim']} latent units active, KL {d['kl']:.2f} nats/image, "
                f"z rms {d['latent_rms']:.2f}: far from N(0, I), which the fitted prior below takes samples to")
        else:
            log(f"latent: {d['note']}")
    best = best_row(state.history)
    later = best is not None and state.history[-1]["val_neg_elbo"] > best["val_neg_elbo"]  # best.pt is not the end
    if later:  # what export takes first; then the last checkpoint's prior, if any
        last = state.history[-1]
        log(f"best.pt: epoch {best['epoch']} of {last['epoch']}, the lowest validation -ELBO "
            f"({best['val_neg_elbo']:.1f}; {last['val_neg_elbo']:.1f} at the end); export takes it"
            + (", with the prior fitted to its own weights (`edgevae info` shows it once exported)"
               if run.prior_fit else ""))
    elif best is not None:
        log(f"best.pt: epoch {best['epoch']}, the last, the lowest validation -ELBO ({best['val_neg_elbo']:.1f}); "
            f"export takes it")
    if run.prior_fit:
        log(f"prior{f' of checkpoint.pt (epoch {state.epoch})' if later else ''}: {prior.describe(run.prior_fit)}")
    lost = colour_lost(best or state.history[-1], config, run.data.image_shape, run.model.latent_shape,
                       f"best.pt (epoch {best['epoch']})" if best else "the model") if state.history else None
    if lost:
        log(f"warning: {lost}")
    out = run.out
    log(f"wrote {out / checkpoint.LAST}, {out / checkpoint.BEST}, {out / 'metrics.jsonl'}, {out / 'loss.png'}, "
        f"{out / 'samples'}/epoch_*.png, {out / 'recon'}/epoch_*.png"
        + (f", {out / SPLIT_FILE} (the folder's files: train, val, test)" if run.data.files is not None else ""))
    return out


def build_run(config, dist: ddp.Dist, log) -> Run:
    """Seed, load the data, build the model and its optimizer."""
    torch.manual_seed(config.seed)
    with dist.main_first():
        data = data_sources.load(config, log=log)
    config = auto.resolve(config, data.train_x, log=log)
    torch.manual_seed(config.seed)  # the same weights whether or not choices were made from the data
    model = models.build(config, data.image_shape, len(data.classes)).to(dist.device)
    if prior.wanted(config):
        prior.check_size(model.latent_shape)
    if config.arch in ("conv", "resnet"):  # oneDNN's convolutions run 1.1-3x faster on NHWC tensors (measured)
        model = model.to(memory_format=torch.channels_last)
    objective = Objective(model)
    fused = dist.device.type in ("cpu", "cuda")  # one kernel for all parameters where torch has it
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)
    # spread over the test split: a folder's test files are in name order, and its first 32 (the recon grid) were
    # all one faction's (Wesnoth's drakes)
    pick = torch.linspace(0, len(data.test_x) - 1, min(REFERENCE_IMAGES, len(data.test_x))).round().long()
    return Run(config, dist, data, model, objective, dist.wrap(objective), optimizer,
               torch.Generator().manual_seed(config.seed), Path(config.out),
               data.test_x[pick].clone(), data.test_y[pick].clone(),
               bfloat16=bfloat16_steps(config, dist.device))


def bfloat16_steps(config, device: torch.device) -> bool:
    """Whether training steps run under a bfloat16 autocast: --precision, or auto = --arch resnet on a CPU whose
    oneDNN has bfloat16 instructions (AVX-512 BF16, AMX). There a step of the default 72 x 72 RGBA model ran 1.7x
    faster (526 against 297 images/s, batches of 32, 2 threads). The weights and Adam's state stay float32, the layers
    the loss reads run in float32 (resnet.in_float32), and validation, the fitted prior, the grids and export see the
    float32 model, so bfloat16 only changes the rounding of the steps' gradients."""
    if config.precision == "bfloat16" and config.arch != "resnet":
        raise ValueError(f"--precision bfloat16 is for --arch resnet (its latent heads and output layer stay float32); "
                         f"this run's --arch is {config.arch}")
    if config.precision != "auto":
        return config.precision == "bfloat16"
    return (config.arch == "resnet" and device.type == "cpu" and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resume(run: Run, log) -> TrainState:
    """Load checkpoint.pt of the run directory into the run; returns where it stood."""
    saved = checkpoint.load(run.out / checkpoint.LAST)
    checkpoint.check_resume(saved["config"], run.config)
    data = run.data
    if (saved["dataset"], list(saved["image_shape"])) != (data.name, list(data.image_shape)):
        raise ValueError(f"cannot resume: the checkpoint was trained on {saved['dataset']} "
                         f"{saved['image_shape']}, --data gives {data.name} {list(data.image_shape)}")
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.gen.set_state(saved["generator"])
    run.lr_scale, run.rollbacks = float(saved.get("lr_scale", 1.0)), int(saved.get("rollbacks", 0))
    state = TrainState.from_checkpoint(saved)
    run.saved_at = _position(state.epoch, state.next_batch, run.batches)
    run.prior_fit = saved.get("prior_fit")
    if state.epoch > run.config.epochs:
        raise ValueError(f"cannot resume: {run.out / checkpoint.LAST} has {state.epoch} epoch(s) done and --epochs "
                         f"is {run.config.epochs}; --epochs is the new total, so pass more than {state.epoch}")
    log(f"resuming {run.out / checkpoint.LAST}: {state.epoch} epoch(s) done"
        + (f", continuing epoch {state.epoch + 1} at batch {state.next_batch}/{run.batches}"
           if state.next_batch else ""))
    return state


def train_epoch(run: Run, state: TrainState, epoch: int, stop: StopSignal, on_step) -> None:
    """The optimizer steps of one epoch, from state.next_batch on; saves and raises Interrupted on Ctrl-C."""
    config, dist, model = run.config, run.dist, run.model
    lr = lr_at(config, epoch, run.progress())
    state.start_epoch(len(run.data.train_x), run.gen)
    batches, first = run.batches, state.next_batch
    bar = tqdm(total=batches, initial=first, desc=f"epoch {epoch}{_of(config)}", leave=False,
               disable=None if dist.is_main else True)
    for b in range(first, batches):
        idx = state.order[b * config.batch_size:(b + 1) * config.batch_size]
        x, y, eps = draw_batch(config, run.data.train_x, run.data.train_y, idx, run.gen, dist, latent_shape_of(model))
        beta = beta_at(config, state.step, batches)
        with torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=run.bfloat16):
            loss, neg_elbo, _, kl = run.trainer(x, eps, y if model.conditional else None, None, beta,
                                                config.free_bits)
        total = loss.sum() * dist.world / len(idx)  # the global batch's mean once DDP averages gradients
        # one all-reduce: a non-finite loss anywhere, a stop request, and the main process's budget clock
        flags = dist.all_sum(torch.tensor([float(not torch.isfinite(total)), float(stop.requested),
                                           run.progress() if dist.is_main else 0.0]))
        if flags[0] and config.grad_clip <= 0:
            raise FloatingPointError(f"loss is not finite at epoch {epoch}, batch {b + 1}/{batches}; stopped without "
                                     f"saving: {_last_saved(run)}. Try a lower --lr or --grad-clip")
        if config.minutes and config.schedule == "cosine":
            lr = lr_at(config, epoch, float(flags[2]))
        _set_lr(run.optimizer, warmed(lr, config, state.step, batches) * run.lr_scale)
        if flags[0]:  # with --grad-clip on, a batch whose loss overflowed is skipped like a non-finite gradient:
            run.skipped += 1  # one unlucky draw of eps must not end a run (Twemoji, 2 x 8 x 8 latent: epoch 19 of a
            # 20-minute run, once); a model that has itself gone bad stops after MAX_SKIPPED in a row
        else:
            state.sums += torch.stack([loss.sum(), neg_elbo.sum(), kl.sum(),
                                       torch.tensor(float(len(x)))]).detach().double()
            run.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if config.grad_clip > 0:  # the norm it returns is the gradients' after DDP's all-reduce: alike everywhere
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                run.skipped = 0 if torch.isfinite(norm) else run.skipped + 1  # clipped, a NaN would spread to all
        if run.skipped:
            _skip_step(run, epoch, b, "loss" if flags[0] else "gradient")
        else:
            run.optimizer.step()
            state.step += 1
            if on_step is not None:
                on_step(epoch, b, model)
        if not bar.disable:
            bar.set_postfix(loss=f"{loss.mean().item():.2f}", elbo=f"{-neg_elbo.mean().item():.2f}",
                            kl=f"{kl.mean().item():.2f}", refresh=False)
            bar.update()
        run.spent = bool(config.minutes and flags[2] >= 1)
        if run.spent and b + 1 < batches:  # budget used up: this epoch ends here
            break
        if flags[1] or stop.requested:
            bar.close()
            state.next_batch = b + 1  # state.epoch is still epoch - 1: this one is not done
            if dist.is_main:
                run.fit_prior()  # the fit goes with the weights it is saved beside
                checkpoint.save(run.checkpoint(state), run.out / checkpoint.LAST)
                run.saved_at = _position(state.epoch, state.next_batch, batches)
            raise Interrupted(f"stopped at epoch {epoch}, batch {b + 1}/{batches}; saved {run.out / checkpoint.LAST}; "
                              f"continue with --resume")
    bar.close()


def _skip_step(run: Run, epoch: int, b: int, what: str = "gradient") -> None:
    """A step whose loss or gradient (`what`) is not finite leaves the weights as they are: warns once. After
    MAX_SKIPPED in a row the model itself has gone bad: the run goes back to the weights and optimizer state of its
    last finite evaluation with half the learning rate (at most MAX_ROLLBACKS times), else stops.

    Seen once on Twemoji's default recipe (a 10-minute run, epoch 38 of ~85; two reruns of it did not diverge): every
    batch's loss overflowed after one step, and the run ended with an error 4 minutes in."""
    where = f"epoch {epoch}, batch {b + 1}/{run.batches}"
    if run.skipped > MAX_SKIPPED and _roll_back(
            run, f"the loss or gradient was not finite for {MAX_SKIPPED + 1} steps in a row at {where}"):
        return
    if run.skipped > MAX_SKIPPED:
        raise FloatingPointError(f"the {what} is not finite at {where}, and the loss or gradient was at the "
                                 f"{MAX_SKIPPED} steps before it (skipped); stopped without saving: "
                                 f"{_last_saved(run)}. Try a lower --lr")
    if run.dist.is_main and "gradient" not in run.warned:
        run.warned.add("gradient")
        tqdm.write(f"warning: the {what} is not finite at {where}: that step is skipped and the weights kept "
                   f"(said once; the run stops after {MAX_SKIPPED} in a row)")


def _on_cpu(tree):
    """A copy of a state dict (nested dicts and lists) with every tensor on the CPU."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {key: _on_cpu(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_on_cpu(value) for value in tree)
    return copy.deepcopy(tree)


def _roll_back(run: Run, what: str) -> bool:
    """Restore the weights and optimizer state of the last finite evaluation and halve the learning rate, saying
    `what` went wrong; False when there is none or MAX_ROLLBACKS were used (the caller stops the run)."""
    if run.good is None or run.rollbacks >= MAX_ROLLBACKS:
        return False
    good_epoch, model_state, optimizer_state = run.good
    run.model.load_state_dict(model_state)
    run.optimizer.load_state_dict(optimizer_state)
    run.rollbacks, run.lr_scale, run.skipped = run.rollbacks + 1, run.lr_scale / 2, 0
    if run.dist.is_main:
        tqdm.write(f"warning: {what}: the weights and optimizer state went back to epoch {good_epoch}'s and the "
                   f"learning rate is x{run.lr_scale:g} for the rest of the run (rollback {run.rollbacks} of at most "
                   f"{MAX_ROLLBACKS})")
    return True


def _position(epoch: int, next_batch: int, batches: int) -> str:
    """Where a saved run stands: after an epoch, or inside the next one (saved on Ctrl-C)."""
    return f"epoch {epoch}" + (f", then batch {next_batch}/{batches} of epoch {epoch + 1}" if next_batch else "")


def _last_saved(run: Run) -> str:
    """Where the last good weights are, for an error that stops a run: what checkpoint.pt holds, not the last epoch
    done (epochs between evaluations are not saved)."""
    if not run.saved_at:
        return "no checkpoint was saved yet"
    return f"the last good checkpoint is {run.out / checkpoint.LAST} ({run.saved_at})"


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def epoch_metrics(run: Run, state: TrainState, epoch: int, train_seconds: float, first: int) -> dict:
    """The epoch's metrics row: training totals, validation and test -ELBO, speed."""
    config, dist, data = run.config, run.dist, run.data
    loss_sum, neg_elbo_sum, kl_sum, seen = dist.all_sum(state.sums).tolist()
    row = {"epoch": epoch, "step": state.step, "lr": run.optimizer.param_groups[0]["lr"],
           "beta": beta_at(config, max(state.step - 1, 0), run.batches),
           **{name: total / seen if seen else math.nan  # no step taken this epoch: nothing to average
              for name, total in (("train_loss", loss_sum), ("train_neg_elbo", neg_elbo_sum), ("train_kl", kl_sum))}}
    if len(data.val_x):
        val = evaluate(run.objective, config, data.val_x, data.val_y, dist)
        row["val_neg_elbo"], row["val_kl"] = val["neg_elbo"], val["kl"]
    row.update({f"test_{k}": v for k, v in evaluate(run.objective, config, data.test_x, data.test_y, dist).items()})
    # images trained on in this call: a resumed epoch's sums include the batches run before the interruption
    row["train_images_per_second"] = round((seen - first * config.batch_size) / train_seconds, 1)
    return row


def check_latent(run: Run, row: dict, settled: bool) -> list[str]:
    """Diagnose the latent on up to DIAGNOSIS_IMAGES validation (else test) images, keep the result in
    run.diagnostics (for the checkpoint) and the row; returns problems not warned about before, once
    `settled` (the KL warm-up over)."""
    model, data = run.model, run.data
    if model.kind != "vae" or not run.dist.is_main:
        return []
    x, y = (data.val_x, data.val_y) if len(data.val_x) else (data.test_x, data.test_y)
    x, y = x[:DIAGNOSIS_IMAGES], y[:DIAGNOSIS_IMAGES]
    mus, logvars, squared, chroma = [], [], 0.0, torch.zeros(2, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), EVAL_BATCH):
            xb = to_unit(x[i:i + EVAL_BATCH]).to(run.dist.device)
            yb = y[i:i + EVAL_BATCH].to(run.dist.device) if model.conditional else None
            mu, logvar = model.encoder(xb, yb)
            recon = model.decode(mu, yb)
            squared += float((recon - xb).double().pow(2).sum())
            if xb.shape[1] >= 3:
                chroma += torch.stack([visible_chroma(xb), visible_chroma(recon, like=xb)]).cpu()
            mus.append(mu.cpu())
            logvars.append(logvar.cpu())
    model.train()
    found = diagnose(torch.cat(mus), torch.cat(logvars))
    run.diagnostics = found.to_dict()
    mse = squared / max(x.numel(), 1)
    name = "val" if len(data.val_x) else "test"  # PSNR of decode(mu), the mean reconstruction, peak 1
    row.update(active_units=found.active_units, latent_rms=round(found.latent_rms, 4),
               **{f"{name}_psnr_db": round(10 * math.log10(1 / mse), 3) if mse > 0 else math.inf})
    if chroma[0] > 0:
        row[f"{name}_colour_kept"] = round(float(chroma[1] / chroma[0]), 4)
    if not settled:
        return []
    fitted = prior.wanted(run.config)  # the fitted prior moves samples to where the latents are: nothing to warn
    new = [w for w in found.warnings() if w.split(":")[0] not in run.warned
           and not (fitted and w.startswith("latents far from"))]
    run.warned.update(w.split(":")[0] for w in new)
    return new


def visible_chroma(images: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """The summed chroma (max - min of R, G, B) of the visible pixels (alpha >= 1/2 in `like`, default `images`
    itself; every pixel without alpha) of (N, C >= 3, H, W) images in [0, 1], float64."""
    like = images if like is None else like
    rgb = images[:, :3].double().clamp(0, 1)
    chroma = rgb.amax(dim=1) - rgb.amin(dim=1)
    return (chroma * (like[:, 3] >= 0.5)).sum() if like.shape[1] == 4 else chroma.sum()


def colour_lost(row: dict, config, image_shape, latent_shape, epoch_name: str) -> str | None:
    """The end-of-run warning when reconstructions kept less than COLOUR_KEPT of the images' colour, or None."""
    from .auto import spatial_latent
    from .resnet import Geometry

    kept = row.get("val_colour_kept", row.get("test_colour_kept"))
    if kept is None or kept >= COLOUR_KEPT:
        return None
    if config.likelihood == "continuous-bernoulli":  # the latent is not what loses it (likelihood.dequantize)
        return (f"colour lost: {epoch_name}'s reconstructions keep {kept:.0%} of the colour saturation of the "
                "held-out images: the continuous Bernoulli washes colours out; --likelihood logistic, the default "
                "for colour images, keeps more")
    widths, channels = spatial_latent(tuple(image_shape))
    larger = channels * math.prod(Geometry(tuple(image_shape), widths).grid) > math.prod(latent_shape)
    spatial = f"--arch resnet --latent-channels {channels} --widths {','.join(map(str, widths))}"
    return (f"colour lost: {epoch_name}'s reconstructions keep {kept:.0%} of the colour saturation of the held-out "
            f"images: its latent ({'x'.join(map(str, latent_shape))}) cannot carry their detail, which comes back "
            f"blurred towards one average colour"
            + (f". A larger spatial latent keeps more ({spatial}: an unconditional model's default; README "
               "\"Your own images\")" if larger else ""))


def best_row(history: list[dict]) -> dict | None:
    """The evaluated epoch with the lowest validation -ELBO, what best.pt holds; None without a validation split."""
    return min((r for r in history if "val_neg_elbo" in r), key=lambda r: r["val_neg_elbo"], default=None)


def given_back(history: list[dict]) -> tuple[float, dict] | None:
    """(share of its fall, best row) when the validation -ELBO has given back more than OVERFIT of its fall from the
    first evaluation to its lowest (and OVERFIT_FLOOR of its size) for OVERFIT_EVALUATIONS evaluations in a row (one
    high epoch is noise, early on especially); None otherwise."""
    best, recent = best_row(history), history[-OVERFIT_EVALUATIONS:]
    if best is None or len(recent) < OVERFIT_EVALUATIONS:
        return None
    first, lowest = history[0]["val_neg_elbo"], best["val_neg_elbo"]
    fall = first - lowest
    least = max(OVERFIT * fall, OVERFIT_FLOOR * abs(lowest))
    if not fall > 0 or any(r.get("val_neg_elbo", lowest) - lowest <= least for r in recent):
        return None
    return (recent[-1]["val_neg_elbo"] - lowest) / fall, best


def overfitting(run: Run, state: TrainState, stopping: bool = False) -> list[str]:
    """Once per run: a warning when the validation -ELBO has given back more than OVERFIT of its fall (given_back),
    with what to do (stopping: the run stops at this evaluation, which says so itself)."""
    back = None if "overfitting" in run.warned else given_back(state.history)
    if back is None:
        return []
    share, best = back
    first, lowest, now = state.history[0]["val_neg_elbo"], best["val_neg_elbo"], state.history[-1]["val_neg_elbo"]
    run.warned.add("overfitting")
    if run.config.patience == 0:  # what the run will do next: train on to its end, or stop by early_stop's rule
        then = " (--minutes can be shorter)"
    elif run.config.patience < 0 and not stopping:
        then = f"; training stops once it has gone on past epoch {best['epoch']} as long as it took to reach it"
    else:
        then = ""
    return [f"overfitting: validation -ELBO {now:.1f} has given back {share:.0%} of its fall from "
            f"{first:.1f} to its lowest ({lowest:.1f}, epoch {best['epoch']}): "
            f"the model is learning these {len(run.data.train_x):,} images by heart. best.pt keeps epoch "
            f"{best['epoch']}, which export takes; more images help, more epochs do not{then}"]


def early_stop(config, history: list[dict]) -> str | None:
    """Why to stop now under --patience (None: go on). Auto (-1): the validation -ELBO has given back more than a
    tenth of its fall (given_back) and the run has gone on past its lowest for as many epochs as it took to reach
    it. On 584 small sprites (15 minutes) the lowest was at epoch 228 of 967: three quarters of the budget trained
    a worse model."""
    best = best_row(history)
    if best is None or config.patience == 0:
        return None
    epoch, since = history[-1]["epoch"], sum(r["epoch"] > best["epoch"] for r in history if "val_neg_elbo" in r)
    if config.patience > 0:
        return None if since < config.patience else (
            f"{since} evaluations without a lower validation -ELBO than epoch {best['epoch']}'s (--patience "
            f"{config.patience}; a larger one, or 0, trains on)")
    back = given_back(history)
    if back is None or epoch - best["epoch"] < best["epoch"]:
        return None
    return (f"the validation -ELBO has given back {back[0]:.0%} of its fall and no epoch in the "
            f"{epoch - best['epoch']} since epoch {best['epoch']} (as many as it took to reach it) went lower "
            "(--patience 0 trains on)")


def write_epoch(run: Run, state: TrainState, row: dict, improved: bool, last: bool = False) -> None:
    """Main process: the metrics line, the sample and reconstruction grids (grid_epoch), loss.png (every
    LOSS_PLOT_SECONDS), the checkpoints."""
    out = run.out
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    run.fit_prior()  # fitted to the weights being saved; checkpoint.load_run folds it in
    if last or grid_epoch(row["epoch"], run.last_grid):
        write_grids(run, row["epoch"])
        run.last_grid = row["epoch"]
    if last or time.perf_counter() - run.plotted[0] >= LOSS_PLOT_SECONDS:
        report.loss_curve(state.history, out / "loss.png")
        run.plotted = (time.perf_counter(), len(state.history))
    saved = run.checkpoint(state)
    checkpoint.save(saved, out / checkpoint.LAST)
    run.saved_at = _position(state.epoch, state.next_batch, run.batches)
    if improved:
        checkpoint.save(saved, out / checkpoint.BEST)


def grid_epoch(epoch: int, last_written: int = 0) -> bool:
    """Whether an evaluated epoch writes samples/ and recon/ grids (the run's last always does), given the epoch of
    the last grid written: one per epoch to 10, per ten epochs to 100, per hundred after -- the first evaluated
    epoch of each, so --eval-every 7 writes about as often as 1 -- and a long run of short epochs writes dozens, not
    one per epoch (967 epochs of a 15-minute run on 584 small sprites had written 1,934 files, 268 MB)."""
    stride = 1 if epoch <= 10 else 10 if epoch <= 100 else 100
    return not last_written or epoch // stride != last_written // stride


def _of(config) -> str:
    """'/N' after an epoch's number; nothing when the --minutes budget, not a count, ends the run."""
    return "" if config.epochs == BUDGET_EPOCHS else f"/{config.epochs}"


def write_grids(run: Run, epoch: int) -> None:
    """samples/epoch_NNN.png (the same z every epoch) and recon/epoch_NNN.png (test images above their decodes)."""
    model, device, seed = run.model, run.dist.device, run.config.seed
    fixed_z = torch.randn(GRID_IMAGES, *latent_shape_of(model),
                          generator=torch.Generator().manual_seed(seed + FIXED_Z_STREAM))
    fixed_y = (torch.arange(GRID_IMAGES) // report.GRID_COLUMNS % max(model.num_classes, 1)).to(device)
    model.eval()
    with torch.no_grad():
        fixed_z = fixed_z.to(device)
        if run.prior_fit:  # samples as the export will draw them: u ~ N(0, I) through the fitted prior
            label = model.decoder.one_hot[fixed_y] if model.conditional else None
            fixed_z = prior.LatentMap.of(run.prior_fit).to(device).from_latent(fixed_z, label)
        report.save_grid(model.decode(fixed_z, fixed_y if model.conditional else None),
                         run.out / "samples" / f"epoch_{epoch:03d}.png")
        ref_x = to_unit(run.reference_x[:GRID_IMAGES // 2]).to(device)
        ref_y = run.reference_y[:GRID_IMAGES // 2].to(device) if model.conditional else None
        recon = model.decode(model.encoder(ref_x, ref_y)[0], ref_y)
        columns = min(report.GRID_COLUMNS, len(ref_x))  # a tiny test set gives a narrower grid
        report.save_grid(report.interleave_rows(ref_x, recon, columns), run.out / "recon" / f"epoch_{epoch:03d}.png",
                         columns)
    model.train()
