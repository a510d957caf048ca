"""Parity of any Source's graphs against the Source itself, at the batch sizes and, when tileable, at another size.

export/gates.py measures max |onnxruntime - torch| on a set of reference images; this module picks
those images and sizes for every model family:

- a run of `edgevae train` brings 256 real test images in its checkpoint; an imported model gets
  `reference_images`: smooth seeded colour fields with edges (not flat grey, not white noise), so
  every layer sees the spatial structure of a picture;
- batch 1, 7 and 64 at the model's image size, or for a tileable model larger than PARITY_SIDE at a
  PARITY_SIDE-pixel crop of it (batch 64 of 512x512 images through Stable Diffusion's VAE would need
  tens of GB), plus batch 1 at the full size;
- a tileable model (dynamic h, w) also at a smaller, non-square latent, the size a tile has.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from . import gates

PARITY_SIDE = 64  # pixels: the largest side of parity images at batch 64 for a tileable model
REFERENCE_SEED = 2024


def reference_images(n: int, image_shape, seed: int = REFERENCE_SEED) -> torch.Tensor:
    """n deterministic test pictures, uint8 (n, C, H, W): a smooth colour field, a disc and a bar per image."""
    c, h, w = image_shape
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = np.empty((n, c, h, w), np.float64)
    for i in range(n):
        a, fx, fy, phase = rng.random((4, c, 1, 1))
        field = 0.5 + 0.35 * a * np.sin(2 * np.pi * (fx * 2 * xx + fy * 2 * yy) + 2 * np.pi * phase)
        cy, cx, r = rng.random(3) * [h, w, min(h, w) / 3]
        disc = (yy * h - cy) ** 2 + (xx * w - cx) ** 2 < (r + 2) ** 2
        bar = np.abs(xx - rng.random()) < 0.08
        out[i] = np.where(disc, rng.random((c, 1, 1)), np.where(bar, 1 - field, field))
    return torch.from_numpy(np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8))


def at_size(source, latent_hw: tuple[int, int]):
    """A shallow view of a tileable Source whose latent (and image) size is latent_hw: same weights."""
    view = copy.copy(source)
    c, s = source.latent_shape[0], source.latent_scale
    view.latent_shape = (c, *latent_hw)
    view.image_shape = (source.image_shape[0], latent_hw[0] * s, latent_hw[1] * s)
    view.latent_dim = c * latent_hw[0] * latent_hw[1]
    return view


def parity(source, reference: dict | None, encoder, decoder, tolerance: float) -> dict:
    """gates.parity at batch 1, 7 and 64 (reduced size for big tileable models) and at a tile's size.

    Returns the spec's `parity`: batch sizes, image shape, tolerance, the worst max |diff| per output,
    the scale each is judged at when one exceeds 1 (gates.parity: max(1, max |torch|); the bound is
    tolerance x scale), and for tileable models the latent size of the extra check.
    """
    runs = []  # (view, images, batch sizes)
    _, h, w = source.image_shape
    if source.tileable and max(h, w) > PARITY_SIDE:
        side = max(1, PARITY_SIDE // source.latent_scale)
        small = at_size(source, (min(side, source.latent_shape[1]), min(side, source.latent_shape[2])))
        runs += [(small, None, gates.PARITY_BATCH_SIZES), (source, None, (1,))]
    else:
        small = source
        runs.append((source, reference, gates.PARITY_BATCH_SIZES))
    tile = None
    if source.tileable:
        lh, lw = small.latent_shape[1:]
        tile = (max(1, lh // 2), max(1, lw // 2 + 1) if lw > 2 else lw)  # smaller and, where it can, not square
        runs.append((at_size(source, tile), None, (2,)))
    worst: dict[str, float] = {}
    scale: dict[str, float] = {}
    for view, images, sizes in runs:
        images = images or {"reference_x": reference_images(max(sizes), view.image_shape)}
        diffs, scales = gates.parity(view, images, encoder, decoder, sizes, tolerance,
                                     relative=source.family == "edgevae")  # imported families: absolute bounds
        for name, value in diffs.items():
            worst[name] = max(worst.get(name, 0.0), value)
            scale[name] = max(scale.get(name, 1.0), scales[name])
    result = {"batch_sizes": list(gates.PARITY_BATCH_SIZES), "image_shape": list(small.image_shape),
              "tolerance": tolerance, "max_abs_diff": worst}
    if any(v > 1 for v in scale.values()):  # outputs beyond unit scale: judged at tolerance x max(1, max |torch|)
        result["scale"] = scale
    if small is not source:
        result["full_size_batch_sizes"] = [1]
    if tile is not None:
        result["tile_latent"] = list(tile)
    return result
