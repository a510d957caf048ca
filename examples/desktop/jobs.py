"""What the desktop app computes, as plain functions of a edgevae.Model: no Tk here, so they run on the worker.

Each returns a Picture: the float images (what "Save" writes through edgevae.save_grid), the grid's
images per row, and a Pillow image of the grid enlarged by an integer factor (nearest neighbour, so
every screen pixel is exactly a grid pixel; tests/test_desktop.py compares a screenshot against it).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import conditional
import numpy as np
from PIL import Image

import edgevae


class Picture(NamedTuple):
    images: np.ndarray  # float32 (N, C, H, W) in [0, 1]
    nrow: int  # images per row of the grid
    scale: int  # each grid pixel is scale x scale screen pixels
    image: Image.Image  # the enlarged grid, ready for ImageTk


def picture(images: np.ndarray, nrow: int | None = None, width: int = 420) -> Picture:
    """Lay images out as edgevae.make_grid does and enlarge the grid to at most `width` pixels (at least 1x)."""
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    grid = edgevae.make_grid(images, nrow)  # uint8 (rows, cols, C)
    scale = max(1, min(8, width // grid.shape[1]))
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return Picture(images, nrow, scale, Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid))


def base_latent(model: edgevae.Model, seed: int, temperature: float) -> np.ndarray:
    """The latent of the first image of sample(n, seed, temperature): temperature * eps[0], flattened, float32 (D,).

    A spatial latent (C, h, w) is flattened row-major: the sliders edit its first elements (channel 0, top row).
    """
    return edgevae.standard_normal(seed, (1, *model.latent_shape))[0].ravel() * np.float32(temperature)


def grid(model: edgevae.Model, seed: int, temperature: float, n: int, y: int | None = None) -> Picture:
    """sample(n, seed, temperature) as a square-ish grid; y is a class index for conditional models."""
    cond = conditional.kwargs(y)
    return picture(model.sample(n, seed=seed, temperature=temperature, **cond))


def latent(model: edgevae.Model, z: np.ndarray, y: int | None = None) -> Picture:
    """One image decoded from the latent the sliders edit, shown large."""
    cond = conditional.kwargs(y)
    return picture(model.decode(np.asarray(z, np.float32).reshape(1, *model.latent_shape), **cond), width=200)


def strip(model: edgevae.Model, seed_a: int, seed_b: int, temperature: float, steps: int, method: str,
          y: int | None = None) -> Picture:
    """Images along the path between the first samples of two seeds, in one row."""
    a, b = (base_latent(model, s, temperature).reshape(model.latent_shape) for s in (seed_a, seed_b))
    cond = conditional.kwargs(y)
    return picture(model.interpolate(a, b, steps=steps, method=method, **cond), nrow=steps, width=640)


def save(picture_: Picture, path: str) -> str:
    """Write the picture's images as edgevae.save_grid does (1 pixel per pixel, same layout)."""
    return str(edgevae.save_grid(picture_.images, path, nrow=picture_.nrow))
