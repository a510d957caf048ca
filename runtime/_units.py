"""Exact tiled decoding and encoding: run a tiled decoder's or encoder's units (export/tiled.py) over tiles.

    x = _units.decode(units, run, z, tile)              # run(k, feed) -> unit k's outputs; x is the whole decode
    z, mu, logvar = _units.encode(units, run, x, eps, tile)

For each image the units run in order. A unit marked `whole` (the decoder's head, the encoder's tail:
latent resolution, global attention) runs on its whole input. Every other unit reads the previous unit's
output, stored whole, and writes its own, tile by tile: a tile is `tile` x `tile` latent cells of the
unit's output (its core) plus the unit's halo (input pixels) around it, cut from the stored input; the
core of what the unit returns is exact, because the halo covers the unit's receptive field (where the
halo reaches the image's edge, the unit's zero padding is the whole network's). Each GroupNorm gets the
whole image's (mean, var) per group: a norm reading the unit's input from the stored input; any other
from the moments of its input (a graph output) over all tiles' cores, gathered in one pass per such norm
with the statistics found so far, then combined in float64 (Chan's parallel formula). A final pass with
every statistic writes the output. Activations are stored as bands, one per row of tiles, and the
input's bands are let go as the final pass moves down. Memory: about one unit's stored input or output,
one tile's activations and the weights; time: about two runs of every resnet (its second norm needs a
pass; a resnet with an upsampler in front, three).
"""
from __future__ import annotations

import math

import numpy as np

ROLES = {"decoder": "decoder_tiled", "encoder": "encoder_tiled"}  # manifest keys; unit k's spec role: f"{role}.{k:02d}"
PLANS = {"decoder": "tiled_decoder", "encoder": "tiled_encoder"}  # spec keys


def signature(unit: dict, role: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(inputs, outputs) of a unit's graph: tiled (h, stats) -> (y, the inputs of its norms that do not read
    h); whole, the decoder's head (h) -> (y) and the encoder's tail (h, eps) -> (z, mu, logvar)."""
    if unit["whole"]:
        return (("h", "eps"), ("z", "mu", "logvar")) if role == "encoder" else (("h",), ("y",))
    inner = tuple(n["input"] for n in unit["norms"] if n["input"] != "unit")
    return ("h", "stats"), ("y", *inner)


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


class Bands:
    """An activation (C, H, W) stored as horizontal bands, one per row of tiles, each let go once read for
    the last time: while a unit writes its output band by band, its input shrinks band by band."""

    def __init__(self, edges: list[int], parts: list):
        self.edges, self.parts = edges, parts  # band k holds rows edges[k]:edges[k + 1]

    def rows(self, r0: int, r1: int, cols: slice) -> np.ndarray:
        """Rows r0:r1, columns `cols` of the activation, as one C-contiguous array."""
        pieces = [part[:, max(r0, a) - a:min(r1, b) - a, cols]
                  for a, b, part in zip(self.edges, self.edges[1:], self.parts) if a < r1 and b > r0]
        return np.ascontiguousarray(pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1))

    def whole(self) -> np.ndarray:
        return self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts, axis=1)

    def release(self, below: int) -> None:
        """Let go of the bands that end at or above row `below`: nothing reads them again."""
        for k, end in enumerate(self.edges[1:]):
            if end <= below:
                self.parts[k] = None


def _windows(unit: dict, lh: int, lw: int, tile: int):
    """Rows of tiles: [((output rows of the row's cores), [(input rows, input columns, core cells)])]; a tile
    is its core (latent cells) and the unit's halo (input pixels) around it, clipped to the image."""
    s_in, halo = unit["scale"][0], unit["halo"]  # a downsampling unit's halo is a multiple of its stride

    def span(c0, c1, n):
        return max(0, c0 * s_in - halo), min(n * s_in, c1 * s_in + halo)

    s_out = unit["scale"][1]
    return [((a0 * s_out, a1 * s_out), [(span(a0, a1, lh), slice(*span(b0, b1, lw)), ((a0, a1), (b0, b1)))
                                        for b0, b1 in cores(lw, tile)])
            for a0, a1 in cores(lh, tile)]


def _core(t: np.ndarray, s_in: int, scale: int, rows: tuple, cols: slice, cells: tuple) -> np.ndarray:
    """The core of a tile's output t (C, h, w) at `scale` px per latent cell: the cells' pixels, where the
    tile's output starts at its input's first pixel scaled."""
    (a0, a1), (b0, b1) = cells
    r, c = rows[0] * scale // s_in, cols.start * scale // s_in
    return t[:, a0 * scale - r:a1 * scale - r, b0 * scale - c:b1 * scale - c]


def run_unit(unit: dict, run, h: Bands, lh: int, lw: int, tile: int) -> Bands:
    """One tiled unit on its stored input h (C_in, lh * s_in, lw * s_in): its output (C_out, lh * s_out, ...),
    in bands; h's bands are let go as the last pass moves down."""
    norms = unit["norms"]
    windows = _windows(unit, lh, lw, tile)
    s_in, s_out = unit["scale"]
    offsets = np.cumsum([0] + [n["groups"] for n in norms])
    stats = np.zeros((1, max(1, offsets[-1]), 2), np.float32)
    stats[..., 1] = 1.0  # a norm not yet known reads (0, 1); its output is ignored until it is known
    for k, norm in enumerate(norms):
        if norm["input"] == "unit":
            m = Moments(norm["groups"])
            for part in h.parts:
                m.add(part)
            stats[0, offsets[k]:offsets[k + 1]] = m.stats()
    names = [n["input"] for n in norms if n["input"] != "unit"]
    for k, norm in enumerate(norms):  # one pass per norm that reads an inner tensor, in order
        if norm["input"] == "unit":
            continue
        m = Moments(norm["groups"])
        for _, row in windows:
            for rows, cols, cells in row:
                outputs = run({"h": h.rows(*rows, cols)[None], "stats": stats})
                m.add(_core(outputs[1 + names.index(norm["input"])][0], s_in, norm["scale"], rows, cols, cells))
        stats[0, offsets[k]:offsets[k + 1]] = m.stats()
    channels = unit["channels"][1]
    edges, parts = [0], []
    for r, ((y0, y1), row) in enumerate(windows):
        band = np.empty((channels, y1 - y0, lw * s_out), np.float32)
        for rows, cols, cells in row:
            feed = {"h": h.rows(*rows, cols)[None]}
            if norms:
                feed["stats"] = stats
            b0, b1 = cells[1]
            band[:, :, b0 * s_out:b1 * s_out] = _core(run(feed)[0][0], s_in, s_out, rows, cols, cells)
        edges.append(y1)
        parts.append(band)
        if r + 1 < len(windows):
            h.release(windows[r + 1][1][0][0][0])  # the next row's first input row
    h.release(1 << 62)
    return Bands(edges, parts)


def _chain(units: list[dict], run, h: np.ndarray, lh: int, lw: int, tile: int, extra: dict, done) -> list:
    """One image through the units: h the first unit's input (C, H, W); the last unit's outputs."""
    h = Bands([0, h.shape[1]], [h])
    outputs = None
    for k, unit in enumerate(units):
        if unit["whole"]:
            outputs = [o[0] for o in run(k, {"h": h.whole()[None], **extra})]
            h = Bands([0, outputs[0].shape[1]], [outputs[0]])
        else:
            h = run_unit(unit, lambda feed, k=k: run(k, feed), h, lh, lw, tile)
            outputs = None
        if done is not None:
            done(k)
    return outputs or [h.whole()]


def decode(units: list[dict], run, z: np.ndarray, tile: int, done=None) -> np.ndarray:
    """x_hat (N, C, H, W) from z (N, c, lh, lw): run(k, feed) -> the outputs of unit k (a list of arrays);
    done(k), if given, is called once unit k has run for the last image (its session may go)."""
    n, _, lh, lw = z.shape
    return np.stack([_chain(units, run, z[i], lh, lw, tile, {}, done if i == n - 1 else None)[0]
                     for i in range(n)])


def encode(units: list[dict], run, x: np.ndarray, eps: np.ndarray, tile: int, done=None):
    """(z, mu, logvar), each (N, c, lh, lw), from x (N, C, H, W) and eps: as decode, the encoder's units."""
    n, _, lh, lw = eps.shape
    parts = [_chain(units, run, x[i], lh, lw, tile, {"eps": eps[i:i + 1]}, done if i == n - 1 else None)
             for i in range(n)]
    return tuple(np.stack([p[j] for p in parts]) for j in range(3))
