"""What a run shows a person: image grids per epoch, the loss curve, metrics as JSON lines.

    samples/epoch_NNN.png   64 decoded samples, the same z every epoch (a conditional model: one class a row)
    recon/epoch_NNN.png     test images (odd rows) above their reconstructions decode(mu) (even rows)
    loss.png                train loss and validation/test negative ELBO per epoch; KL per epoch
    metrics.jsonl           one JSON object per epoch
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

GRID_COLUMNS = 8  # images per grid row
PLOT_SIZE = (9, 3.5)  # loss.png, inches
PLOT_DPI = 100


def save_grid(images: torch.Tensor, path: Path, nrow: int = GRID_COLUMNS) -> None:
    """(N, C, H, W) floats in [0, 1] -> one PNG, nrow images a row, 2 px black padding."""
    from PIL import Image

    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    padded = torch.zeros(rows * nrow, c, h + 2, w + 2)
    padded[:n, :, 1:-1, 1:-1] = images.detach().cpu().clamp(0, 1)
    grid = padded.view(rows, nrow, c, h + 2, w + 2).permute(0, 3, 1, 4, 2).reshape(rows * (h + 2), nrow * (w + 2), c)
    pixels = grid.mul(255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels[:, :, 0] if c == 1 else pixels).save(path)


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
