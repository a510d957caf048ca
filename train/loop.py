"""The training loop: in-memory data batched by index, Adam, per-epoch metrics, grids and checkpoints.

A run directory holds:
    config.json       the resolved TrainConfig
    checkpoint.pt     {'config', 'model', 'optimizer', 'epoch', 'metrics', 'image_shape', 'classes',
                       'dataset', 'reference_x'}; torch.load(path, weights_only=True) reads it
    metrics.jsonl     one JSON object per epoch: train_loss, test_neg_elbo, test_recon, test_kl, seconds
    samples/epoch_NNN.png   64 decoded N(0, I) samples, the same z every epoch
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from . import data as data_sources
from . import model as models
from .elbo import negative_elbo

REFERENCE_IMAGES = 256  # test images stored in the checkpoint, so export can verify on real data


def pick_device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]."""
    return x.float().div_(255.0)


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> None:
    """(N, C, H, W) floats in [0, 1] -> one PNG, nrow images a row, 2 px black padding."""
    from PIL import Image

    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    padded = torch.zeros(rows * nrow, c, h + 2, w + 2)
    padded[:n, :, 1:-1, 1:-1] = images.detach().cpu().clamp(0, 1)
    grid = padded.view(rows, nrow, c, h + 2, w + 2).permute(0, 3, 1, 4, 2).reshape(rows * (h + 2), nrow * (w + 2), c)
    pixels = grid.mul(255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels[:, :, 0] if c == 1 else pixels).save(path)


def save_checkpoint(state: dict, path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, batch_size: int, seed: int, device: torch.device) -> dict:
    """Mean negative ELBO, reconstruction NLL and KL per image over uint8 images x, with seeded eps."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    totals = torch.zeros(3, dtype=torch.float64)
    for i in range(0, len(x), batch_size):
        xb = to_unit(x[i:i + batch_size]).to(device)
        eps = torch.randn(len(xb), model.latent_dim, generator=gen).to(device)
        _, recon, kl = negative_elbo(model, xb, eps)
        totals += torch.stack([(recon + kl).sum(), recon.sum(), kl.sum()]).double().cpu()
    model.train()
    neg_elbo, recon, kl = (totals / len(x)).tolist()
    return {"test_neg_elbo": neg_elbo, "test_recon": recon, "test_kl": kl}


def train(config) -> Path:
    """Train the model `config` describes; returns the run directory."""
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    data = data_sources.load(config)
    model = models.build(config, data.image_shape).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    out = Path(config.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")

    gen = torch.Generator().manual_seed(config.seed)  # batching and training noise
    fixed_z = torch.randn(64, config.latent_dim, generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
    n = len(data.train_x)
    print(f"training {config.model} ({config.arch}) on {data.name}: {n} train / {len(data.test_x)} test images "
          f"{'x'.join(map(str, data.image_shape))}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"device {device}")
    for epoch in range(1, config.epochs + 1):
        start, total, seen = time.perf_counter(), 0.0, 0
        order = torch.randperm(n, generator=gen)
        bar = tqdm(range(0, n, config.batch_size), desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=None)
        for i in bar:
            idx = order[i:i + config.batch_size]
            x = to_unit(data.train_x[idx]).to(device)  # (B, C, H, W)
            eps = torch.randn(len(x), config.latent_dim, generator=gen).to(device)
            loss, recon, kl = negative_elbo(model, x, eps, config.beta)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step {i // config.batch_size}; "
                                         f"the last good checkpoint is {out / 'checkpoint.pt'}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(x), seen + len(x)
            bar.set_postfix(loss=f"{loss.item():.2f}", kl=f"{kl.mean().item():.2f}")
        row = {"epoch": epoch, "train_loss": total / seen,
               **evaluate(model, data.test_x, 1024, config.seed, device),
               "seconds": round(time.perf_counter() - start, 3)}
        with metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        model.eval()
        with torch.no_grad():
            save_grid(model.decode(fixed_z), out / "samples" / f"epoch_{epoch:03d}.png")
        model.train()
        save_checkpoint({
            "config": dataclasses.asdict(config), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch, "metrics": row, "dataset": data.name, "image_shape": list(data.image_shape),
            "classes": list(data.classes), "reference_x": data.test_x[:REFERENCE_IMAGES].clone(),
        }, out / "checkpoint.pt")
        print(f"epoch {epoch:3d}/{config.epochs}  train loss {row['train_loss']:8.3f}  "
              f"test -ELBO {row['test_neg_elbo']:8.3f}  KL {row['test_kl']:6.3f}  ({row['seconds']:.1f} s)")
    print(f"wrote {out / 'checkpoint.pt'}, {metrics_path}, {out / 'samples'}/epoch_*.png")
    return out
