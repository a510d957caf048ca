"""Tiled decoding and encoding for tileable exports (spec `tileable`: the graphs' h and w are dynamic).

    x = model.decode(z, tile=16)                # 16x16-cell latent tiles
    enc = model.encode(x, tile=16, seed=0)      # the same for the encoder, in latent cells too

A convolutional decoder's activations grow with the image: Stable Diffusion's VAE decoding a 64x64x4
latent holds several 128-channel 512x512 float32 tensors at once. Decoding tiles bounds that to one
tile's activations. Two ways, chosen by the export:

- Exact: an export with a tiled decoder and encoder (spec `tiled_decoder`, `tiled_encoder`, files
  decoder.tiled.NN.onnx, encoder.tiled.NN.onnx; diffusers' AutoencoderKL gets them, export/tiled.py)
  runs them (runtime/_units.py). Each network is cut into units; the part at latent resolution with the
  attention (the decoder's conv_in and mid block, the encoder's mid block to z) runs on the whole latent,
  and every other unit (a resnet block, with its upsampler or downsampler) runs tile by tile on the
  previous unit's output, stored whole. Every tile carries the unit's halo (its receptive field, a few
  pixels), so its core is exact, and every GroupNorm is given the whole image's statistics: from the
  stored input, or gathered over all tiles' cores in an extra pass. The result is the whole decode
  (encode) up to float32 rounding; `overlap` is not used (halos come from the graphs). Why not per-tile
  or iterated statistics: with each tile normalising by its own statistics, or with all norms'
  statistics re-estimated together pass after pass (tiles in lockstep), a deep decoder amplifies the
  error instead of converging, and a tile needs a halo as wide as the whole decoder's receptive field
  (~12 latent cells for SD's VAE) — docs/design.md "Exact tiled decoding".
- Blended (here): other tileable exports decode overlapping tiles of decoder.onnx one at a time and
  blend them. Tiles overlap by at least `overlap` latent cells (default tile // 4) and are blended with
  weights that ramp across the overlap (a partition of unity after normalisation): inside a tile the
  weight is 1; towards an edge shared with a neighbour it falls to near 0, so each pixel near a seam is
  mostly taken from the tile where it lies deepest. Without overlap the seams show: each tile's border
  sees zero padding where the whole image had content, and GroupNorm and attention see only the tile.
  With overlap the result approaches the untiled one but is not equal to it.

Blended encoding (exports without a tiled encoder): mu and logvar are blended the same way (latent cells,
ramps over the overlap) and z = mu + exp(0.5 * logvar) * eps is formed in numpy, so the contract's relation
holds for what is returned; like blended decoding it is close to, not equal to, the whole encode.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import EdgeVAEError, check_int

RAMPS = ("linear", "cosine")


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of `length` cells: the fewest tiles whose neighbours overlap by at least
    `overlap` cells, spread evenly from 0 to length - tile (so the overlaps are equal, give or take a cell)."""
    if length <= tile:
        return [0]
    count = 1 + math.ceil((length - tile) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _axis_weights(length: int, begin: int, end: int, prev_end: int | None, next_begin: int | None,
                  ramp: str) -> np.ndarray:
    """Weights (end - begin,) of one tile along one axis: 1 inside, ramping over overlaps with neighbours."""
    p = np.arange(begin, end, dtype=np.float64) + 0.5
    w = np.ones(end - begin)
    if prev_end is not None and prev_end > begin:
        w = np.minimum(w, (p - begin) / (prev_end - begin))
    if next_begin is not None and next_begin < end:
        w = np.minimum(w, (end - p) / (end - next_begin))
    if ramp == "cosine":
        w = 0.5 - 0.5 * np.cos(np.pi * w)
    return np.maximum(w, 1e-3)  # never exactly 0: a pixel covered by one tile only keeps that tile's value


def _plan(shape: tuple[int, int], tile: int, overlap: int, scale: int, ramp: str):
    """[(cell slices, pixel slices, pixel weights (th*s, tw*s))] covering a latent of `shape` (h, w)."""
    plan = []
    axes = [starts(n, tile, overlap) for n in shape]
    sizes = [min(tile, n) for n in shape]
    for i, a in enumerate(axes[0]):
        for j, b in enumerate(axes[1]):
            weights = []
            for axis, (s0, k, seq) in enumerate(((a, i, axes[0]), (b, j, axes[1]))):
                size = sizes[axis]
                prev_end = (seq[k - 1] + size) * scale if k > 0 else None
                next_begin = seq[k + 1] * scale if k + 1 < len(seq) else None
                weights.append(_axis_weights(shape[axis] * scale, s0 * scale, (s0 + size) * scale,
                                             prev_end, next_begin, ramp))
            cells = (slice(a, a + sizes[0]), slice(b, b + sizes[1]))
            pixels = (slice(a * scale, (a + sizes[0]) * scale), slice(b * scale, (b + sizes[1]) * scale))
            plan.append((cells, pixels, np.outer(*weights).astype(np.float32)))
    return plan


def check(spec: dict, tile, overlap, ramp: str, what: str) -> tuple[int, int]:
    """(tile, overlap) as ints for a tileable export; EdgeVAEError naming the bound otherwise."""
    if not spec.get("tileable"):
        raise EdgeVAEError(f"{what}: this export is not tileable (its graphs fix the spatial size; spec tileable "
                           f"is {spec.get('tileable', False)!r}): call it without tile=")
    latent = spec["latent_shape"]
    tile = check_int(tile, f"{what}: tile (latent cells per tile side)", 1, max(latent[1:]))
    overlap = check_int(tile // 4 if overlap is None else overlap, f"{what}: overlap (latent cells)", 0,
                        max(0, tile - 1))
    if ramp not in RAMPS:
        raise EdgeVAEError(f"{what}: ramp must be one of {', '.join(RAMPS)}, got {ramp!r}")
    return tile, overlap


def decode(run, z: np.ndarray, scale: int, channels: int, tile: int, overlap: int, ramp: str = "linear"):
    """x_hat (N, C, h * scale, w * scale) from z (N, c, h, w), decoding one tile of one image at a time.

    run(z_tile) -> x_hat tile (1, C, th * scale, tw * scale), float32.
    """
    n, _, h, w = z.shape
    out = np.zeros((n, channels, h * scale, w * scale), np.float32)
    total = np.zeros((h * scale, w * scale), np.float32)
    plan = _plan((h, w), tile, overlap, scale, ramp)
    for _, pixels, weight in plan:
        total[pixels] += weight
    for k in range(n):
        for cells, pixels, weight in plan:
            part = run(np.ascontiguousarray(z[k:k + 1, :, cells[0], cells[1]]))
            out[k, :, pixels[0], pixels[1]] += part[0] * weight
    out /= total
    return np.clip(out, 0.0, 1.0, out=out)


def encode(run, x: np.ndarray, eps: np.ndarray, scale: int, latent_channels: int, tile: int, overlap: int,
           ramp: str = "linear"):
    """(z, mu, logvar), each (N, c, h, w), from x (N, C, h * scale, w * scale) encoded one tile at a time.

    run(x_tile, eps_tile) -> (z, mu, logvar) tiles; mu and logvar are blended, z formed from them and eps.
    """
    n = len(x)
    h, w = x.shape[2] // scale, x.shape[3] // scale
    mu = np.zeros((n, latent_channels, h, w), np.float32)
    logvar = np.zeros_like(mu)
    total = np.zeros((h, w), np.float32)
    plan = _plan((h, w), tile, overlap, 1, ramp)  # blended in latent cells
    for cells, _, weight in plan:
        total[cells] += weight
    for k in range(n):
        for cells, _, weight in plan:
            pixels = tuple(slice(s.start * scale, s.stop * scale) for s in cells)
            _, m, lv = run(np.ascontiguousarray(x[k:k + 1, :, pixels[0], pixels[1]]),
                           np.ascontiguousarray(eps[k:k + 1, :, cells[0], cells[1]]))
            mu[k, :, cells[0], cells[1]] += m[0] * weight
            logvar[k, :, cells[0], cells[1]] += lv[0] * weight
    mu /= total
    logvar /= total
    z = (mu + np.exp(np.float32(0.5) * logvar) * eps).astype(np.float32)
    return z, mu, logvar
