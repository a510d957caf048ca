"""Exact tiled decoding: run a tiled decoder's units (spec `tiled_decoder`, export/tiled.py) over tiles.

    x = _units.decode(units, run, z, tile)    # run(k, feed) -> unit k's outputs; x equals the whole decode

For each image: unit 0 (the head) runs on the whole latent; every later unit reads the previous unit's
output, stored whole, and writes its own, tile by tile. A tile is `tile` x `tile` latent cells of the
unit's output (its core) plus the unit's halo around it, cut from the stored input; the core of what
the unit returns is exact, because the halo covers the unit's receptive field (where the halo reaches
the image's edge, the unit's zero padding is the whole decode's). Each GroupNorm gets the whole image's
(mean, var) per group: a norm reading the unit's input from the stored input; any other from the
moments of its input (a graph output) over all tiles' cores, gathered in one pass per such norm with
the statistics found so far, then combined in float64 (Chan's parallel formula). A final pass with
every statistic writes the output. Memory: the two stored activations of the unit being run, one
tile's activations and the weights; time: about two runs of every resnet (its second norm needs a pass).
"""
from __future__ import annotations

import math

import numpy as np

ROLE = "decoder_tiled"  # unit k's spec role is f"{ROLE}.{k:02d}"; the manifest's variant lists the files under ROLE


def signature(unit: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(inputs, outputs) of a unit's graph: (h[, stats]) -> (y, the inputs of its norms that do not read h)."""
    inner = tuple(n["input"] for n in unit["norms"] if n["input"] != "unit")
    return ("h",) if unit["whole"] else ("h", "stats"), ("y", *inner)


def cores(length: int, tile: int) -> list[tuple[int, int]]:
    """[(begin, end)] splitting `length` cells into the fewest parts of at most `tile`, sizes within one."""
    count = max(1, math.ceil(length / tile))
    cuts = [round(i * length / count) for i in range(count + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


class Moments:
    """Running (count, mean, M2) per group, combined across parts in float64."""

    def __init__(self, groups: int):
        self.groups, self.count = groups, 0
        self.mean, self.m2 = np.zeros(groups), np.zeros(groups)

    def add(self, a: np.ndarray) -> None:
        """Add an array (C, H, W): its channels in `groups` consecutive groups."""
        per = a.shape[0] // self.groups
        n = per * a.shape[1] * a.shape[2]
        if n == 0:
            return
        for g in range(self.groups):
            part = a[g * per:(g + 1) * per].astype(np.float64)
            mean = part.mean()
            m2 = float(np.square(part - mean).sum())
            delta, total = mean - self.mean[g], self.count + n
            self.mean[g] += delta * n / total
            self.m2[g] += m2 + delta * delta * self.count * n / total
        self.count += n

    def stats(self) -> np.ndarray:
        """(G, 2): mean and (population) variance per group."""
        return np.stack([self.mean, self.m2 / max(self.count, 1)], axis=1)


def _windows(unit: dict, lh: int, lw: int, tile: int):
    """[(input slices, core slices in the unit's output, core slices within the tile's output)]."""
    s_in, s_out = unit["scale"]
    ratio = s_out // s_in
    halo_in = -(-unit["halo"] // ratio)
    out = []
    for a0, a1 in cores(lh, tile):
        for b0, b1 in cores(lw, tile):
            crop, core, inner = [], [], []
            for c0, c1, n in ((a0, a1, lh), (b0, b1, lw)):
                i0, i1 = max(0, c0 * s_in - halo_in), min(n * s_in, c1 * s_in + halo_in)
                crop.append(slice(i0, i1))
                core.append(slice(c0 * s_out, c1 * s_out))
                inner.append(slice(c0 * s_out - i0 * ratio, c1 * s_out - i0 * ratio))
            out.append((tuple(crop), tuple(core), tuple(inner)))
    return out


def run_unit(unit: dict, run, h: np.ndarray, lh: int, lw: int, tile: int) -> np.ndarray:
    """One tiled unit on a stored input h (C_in, lh * s_in, lw * s_in): its output (C_out, lh * s_out, ...)."""
    norms = unit["norms"]
    windows = _windows(unit, lh, lw, tile)
    offsets = np.cumsum([0] + [n["groups"] for n in norms])
    stats = np.zeros((1, max(1, offsets[-1]), 2), np.float32)
    stats[..., 1] = 1.0  # a norm not yet known reads (0, 1); its output is ignored until it is known
    for k, norm in enumerate(norms):
        if norm["input"] == "unit":
            m = Moments(norm["groups"])
            m.add(h)
            stats[0, offsets[k]:offsets[k + 1]] = m.stats()
    names = [n["input"] for n in norms if n["input"] != "unit"]
    for k, norm in enumerate(norms):  # one pass per norm that reads an inner tensor, in order
        if norm["input"] == "unit":
            continue
        m = Moments(norm["groups"])
        for crop, _, inner in windows:
            outputs = run({"h": np.ascontiguousarray(h[:, crop[0], crop[1]])[None], "stats": stats})
            m.add(outputs[1 + names.index(norm["input"])][0][:, inner[0], inner[1]])
        stats[0, offsets[k]:offsets[k + 1]] = m.stats()
    s_out = unit["scale"][1]
    y = np.empty((unit["channels"][1], lh * s_out, lw * s_out), np.float32)
    for crop, core, inner in windows:
        feed = {"h": np.ascontiguousarray(h[:, crop[0], crop[1]])[None]}
        if norms:
            feed["stats"] = stats
        y[:, core[0], core[1]] = run(feed)[0][0][:, inner[0], inner[1]]
    return y


def decode(units: list[dict], run, z: np.ndarray, tile: int) -> np.ndarray:
    """x_hat (N, C, H, W) from z (N, c, lh, lw): run(k, feed) -> the outputs of unit k (a list of arrays)."""
    n, _, lh, lw = z.shape
    images = []
    for i in range(n):
        h = run(0, {"h": z[i:i + 1]})[0][0]
        for k in range(1, len(units)):
            h = run_unit(units[k], lambda feed, k=k: run(k, feed), h, lh, lw, tile)
        images.append(h)
    return np.stack(images)
