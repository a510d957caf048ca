"""What a run shows a person: image grids per epoch, the loss curve, metrics as JSON lines.

    samples/epoch_NNN.png   64 decoded samples, the same z every epoch (a conditional model: one class a row)
    recon/epoch_NNN.png     test images (odd rows) above their reconstructions decode(mu) (even rows)
    loss.png                train loss and validation/test negative ELBO per epoch; KL per epoch
    metrics.jsonl           one JSON object per epoch

and, on demand, the report of train/figures.py (latent space, prior samples, manifold, interpolations, KL):

    edgevae report runs/mnist-vae --compare runs/mnist-ae     # PNGs in runs/mnist-vae/report/
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

import edgevae

from .config import arg

GRID_COLUMNS = 8  # images per grid row
PLOT_SIZE = (9, 3.5)  # loss.png, inches
PLOT_DPI = 100


def make_grid(images: torch.Tensor, nrow: int = GRID_COLUMNS):
    """(N, C, H, W) floats in [0, 1] -> uint8 pixels (rows, columns, C): the runtime's grid (edgevae.make_grid);
    RGBA images are shown on a checkerboard, so transparency reads as such."""
    return edgevae.make_grid(images.detach().cpu().float().numpy(), nrow, background="checkerboard")


def save_grid(images: torch.Tensor, path: Path, nrow: int = GRID_COLUMNS) -> None:
    """(N, C, H, W) floats in [0, 1] -> one PNG, nrow images a row: the runtime's grid (edgevae.save_grid);
    RGBA images on a checkerboard."""
    edgevae.save_grid(images.detach().cpu().float().numpy(), path, nrow=nrow, background="checkerboard")


def interleave_rows(originals: torch.Tensor, reconstructions: torch.Tensor, nrow: int = GRID_COLUMNS) -> torch.Tensor:
    """(N, C, H, W) twice -> (2N, C, H, W): a row of originals, then the row of their reconstructions, ..."""
    n = len(originals) - len(originals) % nrow
    pairs = torch.stack([originals[:n].view(-1, nrow, *originals.shape[1:]),
                         reconstructions[:n].view(-1, nrow, *originals.shape[1:])], dim=1)  # (rows, 2, nrow, C, H, W)
    return pairs.flatten(0, 2)


def write_metrics(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def loss_curve(history: list[dict], path: Path) -> None:
    """loss.png from the metrics rows (matplotlib's Agg canvas; no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=PLOT_SIZE, dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, kl_ax = figure.subplots(1, 2)
    for key, label in (("train_loss", "train loss"), ("val_neg_elbo", "validation -ELBO"),
                       ("test_neg_elbo", "test -ELBO"), ("test_neg_iwae", "test -IWAE bound")):
        if key in history[0]:
            loss_ax.plot(epochs, [row[key] for row in history], marker="o", markersize=3, label=label)
    loss_ax.set(xlabel="epoch", ylabel="nats per image", title="loss")
    loss_ax.legend()
    kl_ax.plot(epochs, [row["test_kl"] for row in history], marker="o", markersize=3, color="tab:red")
    kl_ax.set(xlabel="epoch", ylabel="nats per image", title="test KL(q(z|x) || p(z))")
    for ax in (loss_ax, kl_ax):
        ax.grid(alpha=0.3)
    figure.savefig(path)


@dataclass(frozen=True)
class ReportConfig:
    compare: str = arg("", "a second run directory drawn beside the first (e.g. the AE for a VAE)")
    out: str = arg("", "directory for the PNGs (default RUN_DIR/report)")
    checkpoint: str = arg("auto", "which checkpoint of each run: best, last, or auto (best when the run has one)",
                          ("auto", "best", "last"))
    points: int = arg(1000, "test images drawn in the latent-space plot")
    data: str = arg("", "the data source, if not where the runs' configs say")

    def __post_init__(self):
        if self.points < 1:
            raise ValueError(f"--points must be >= 1, got {self.points}")


def panel(run_dir: str, cfg: ReportConfig):
    """Load a run and encode its test set (as it was trained: binarized only with --binarize)."""
    from .checkpoint import load_run
    from .evaluate import activity, encode, kl_per_dim, load_test_set
    from .figures import Panel

    model, ckpt, config = load_run(run_dir, cfg.checkpoint)
    x, y, classes = load_test_set(config, cfg.data, binarized=config.binarize)
    mu, logvar = encode(model, x, y if model.conditional else None)
    mu, logvar = mu.flatten(1), None if logvar is None else logvar.flatten(1)  # a spatial latent: its numbers
    kind = "VAE" if logvar is not None else "autoencoder"
    title = f"{kind}  ({Path(run_dir).name}, {config.arch}, D = {mu.shape[1]})"
    return Panel(title, model, x, y, classes, mu, logvar, None if logvar is None else kl_per_dim(mu, logvar).float(),
                 activity(mu).float())


def write_report(run_dir: str, cfg: ReportConfig, log=print) -> list[Path]:
    """Every figure of train/figures.py for RUN_DIR (and --compare), the autoencoder on the left."""
    from . import figures
    from .evaluate import ACTIVE_THRESHOLD

    with torch.inference_mode():
        panels = sorted((panel(r, cfg) for r in (run_dir, cfg.compare) if r), key=lambda p: p.variational)
        out = Path(cfg.out or Path(run_dir) / "report")
        new = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        written = [out / name for name in ("latent.png", "prior_samples.png", "manifold.png", "interpolation.png")]
        try:
            figures.latent_space(panels, written[0], cfg.points)
            figures.prior_samples(panels, written[1])
            figures.manifold(panels, written[2])
            figures.interpolation(panels, written[3])
            if any(p.variational for p in panels):
                written.append(out / "kl_per_dim.png")
                figures.kl_per_dim(panels, written[-1], ACTIVE_THRESHOLD)
        except BaseException:
            if new:  # a folder the report made is not left behind half-written
                shutil.rmtree(out, ignore_errors=True)
            raise
    log("wrote " + ", ".join(map(str, written)))
    return written


def main(argv: list[str] | None = None) -> int:
    from .config import run_dir_main

    return run_dir_main(argv, "edgevae report", "Draw a run's latent space, prior samples, manifold, "
                        "interpolations and KL per dimension as PNGs (beside a second run with --compare).",
                        ReportConfig, write_report)


if __name__ == "__main__":
    raise SystemExit(main())
