"""Portable standard-normal noise: Philox4x32-10 (Salmon et al., SC'11) + Box-Muller, in numpy.

The same (seed, shape) gives the same float32 array here and in any host that implements these
steps (the README gives them for C#, C++ and JavaScript; tests/test_noise.py holds reference vectors):

1. key = (seed mod 2^32, seed div 2^32) for a seed in [0, 2^64).
2. Block b = 0, 1, 2, ... uses counter (b mod 2^32, b div 2^32, 0, 0); Philox4x32-10 maps
   (counter, key) to four uint32 words w0..w3.
3. Each word becomes a uniform in (0, 1): u = (w + 0.5) / 2^32, in float64.
4. Box-Muller on pairs (u0, u1) and (u2, u3): r = sqrt(-2 ln u_even), t = 2 pi u_odd,
   normals r cos t and r sin t, so one block gives four normals in order n0 n1 n2 n3.
5. The first prod(shape) normals, in C order, cast to float32, are the array.

Step 5 makes a sample of n images a prefix of a sample of m > n images with the same seed.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import EdgeVAEError, check_int

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)  # Philox multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, sqrt(3) - 1)
_MASK32 = np.uint64(0xFFFFFFFF)
_ROUNDS = 10
_SMALL = 16  # up to this many blocks (64 normals), Philox runs on Python ints instead of numpy arrays


def philox4x32(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of each row of `counter` (uint32, shape (B, 4)) under `key`; returns (B, 4) uint32."""
    c = np.asarray(counter, dtype=np.uint64)
    c0, c1, c2, c3 = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for _ in range(_ROUNDS):
        p0 = _M0 * c0  # a 32x32-bit product fits in uint64: hi = p >> 32, lo = p & mask
        p1 = _M1 * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & _MASK32, \
            (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & _MASK32
        k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def _philox_block(block: int, key: tuple[int, int]) -> tuple[int, int, int, int]:
    """Philox4x32-10 of counter (block mod 2^32, block div 2^32, 0, 0) with Python ints: for a handful of
    blocks this beats numpy's per-call overhead; the words are the same integers either way."""
    c0, c1, c2, c3 = block & 0xFFFFFFFF, block >> 32, 0, 0
    k0, k1 = key
    for _ in range(_ROUNDS):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & 0xFFFFFFFF, (p0 >> 32) ^ c3 ^ k1, p0 & 0xFFFFFFFF
        k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


MAX_VALUES = 1 << 26  # values one call draws (256 MiB of float32); drawn _CHUNK_BLOCKS blocks at a time
_CHUNK_BLOCKS = 1 << 16  # blocks per numpy pass: bounds the float64 temporaries to a few MB


def standard_normal(seed: int, shape: tuple[int, ...] | int) -> np.ndarray:
    """Standard-normal float32 array of `shape`, a pure function of (seed, shape); see the module doc."""
    seed = check_int(seed, "seed", 0, 2**64 - 1)
    dims = (shape,) if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool) else shape
    try:
        shape = tuple(check_int(s, "noise shape: each dimension", 0, MAX_VALUES) for s in dims)
    except TypeError:  # not iterable: 2.5, None ...
        raise EdgeVAEError(f"noise shape must be an int or a tuple of ints, got {shape!r}") from None
    count = math.prod(shape)
    if count > MAX_VALUES:
        raise EdgeVAEError(f"noise shape {shape} holds {count:,} values, more than the {MAX_VALUES:,} one call draws")
    n_blocks, key = (count + 3) // 4, (int(seed) & 0xFFFFFFFF, int(seed) >> 32)
    if n_blocks <= _SMALL:
        words = np.array([_philox_block(b, key) for b in range(n_blocks)], dtype=np.uint32).reshape(-1, 4)
        return _box_muller(words).reshape(-1)[:count].astype(np.float32).reshape(shape)
    out = np.empty(n_blocks * 4, np.float32)
    for first in range(0, n_blocks, _CHUNK_BLOCKS):
        blocks = np.arange(first, min(first + _CHUNK_BLOCKS, n_blocks), dtype=np.uint64)
        counter = np.zeros((len(blocks), 4), dtype=np.uint64)
        counter[:, 0], counter[:, 1] = blocks & _MASK32, blocks >> np.uint64(32)
        out[4 * first:4 * (first + len(blocks))] = _box_muller(philox4x32(counter, key)).reshape(-1)
    return out[:count].reshape(shape)


def _box_muller(words: np.ndarray) -> np.ndarray:
    """(B, 4) uint32 Philox words -> (B, 4) float64 normals n0 n1 n2 n3 (steps 3 and 4 of the module doc)."""
    u = (words.astype(np.float64) + 0.5) / 2.0**32  # in (0, 1): log(u) is finite
    r = np.sqrt(-2.0 * np.log(u[:, 0::2]))  # (B, 2): from u0 and u2
    t = 2.0 * np.pi * u[:, 1::2]  # (B, 2): from u1 and u3
    return np.stack([r[:, 0] * np.cos(t[:, 0]), r[:, 0] * np.sin(t[:, 0]),
                     r[:, 1] * np.cos(t[:, 1]), r[:, 1] * np.sin(t[:, 1])], axis=1)
