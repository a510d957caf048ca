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

How it is computed (the bits are those of the steps above; tests/test_noise.py checks both paths):
a Philox round needs the 64-bit products M0*c0 and M1*c2, so the pair (c0, c2) is one uint32 array
multiplied once per round into uint64, whose two uint32 halves (a view, no copy) are the next round's
words. Box-Muller runs in float64 in place, chunk by chunk, so the working set stays in cache. A few
blocks (batch 1) run Philox on Python ints instead, where numpy's per-call overhead would dominate.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from .errors import EdgeVAEError, check_int

_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, sqrt(3) - 1)
_ROUNDS = 10
_SMALL = 8  # up to this many blocks (32 normals), Philox and Box-Muller's arithmetic run on Python scalars
_CHUNK = 8192  # blocks per chunk of the array path: its buffers (~0.6 MB) stay in the CPU's cache
_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)  # uint32 halves of a uint64
_MULT = np.array([[_M0], [_M1]], dtype=np.uint64)  # row 0 multiplies c0, row 1 c2
_INV32 = 2.0**-32  # u = (w + 0.5) * 2^-32 is exact in float64
_TWO_PI_INV32 = 2.0 * math.pi * 2.0**-32  # t = 2 pi u = (w + 0.5) * this, the same float64 (a power-of-two scaling)


def _keys(key: tuple[int, int]) -> list[np.ndarray]:
    """The ten round keys as uint32 columns [[k0], [k1]]."""
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    out = []
    for _ in range(_ROUNDS):
        out.append(np.array([[k0], [k1]], dtype=np.uint32))
        k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return out


def _rounds(even: np.ndarray, odd: np.ndarray, keys: list[np.ndarray], prod: tuple[np.ndarray, np.ndarray]):
    """Philox4x32-10 on words (c0, c2) = the rows of `even` (2, B) uint32, updated in place, and (c1, c3)
    = the rows of `odd`.

    Returns `odd`'s final value, a view into one of the two (2, B) uint64 buffers `prod`; `even` ends
    as (w0, w2), the result as (w1, w3). A round is
    (c0, c1, c2, c3) <- (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)),
    i.e. even <- hi(P)[rows swapped] ^ odd ^ k and odd <- lo(P)[rows swapped], with P = (M0 c0, M1 c2):
    one multiply and two XORs over long rows, the halves being uint32 views of P.
    """
    n = even.shape[1]
    for i, k in enumerate(keys):
        p = prod[i & 1]  # alternate buffers: `odd` still views the previous product
        np.multiply(even, _MULT, out=p)
        halves = p.view(np.uint32).reshape(2, n, 2)[::-1]  # ((M1 c2, M0 c0), B, (lo, hi) in memory order)
        np.bitwise_xor(halves[:, :, _HI], odd, out=even)
        np.bitwise_xor(even, k, out=even)
        odd = halves[:, :, _LO]
    return odd


def philox4x32(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of each row of `counter` (uint32, shape (B, 4)) under `key`; returns (B, 4) uint32."""
    c = np.asarray(counter, dtype=np.uint32).reshape(-1, 4)
    even, odd = np.ascontiguousarray(c[:, 0::2].T), np.ascontiguousarray(c[:, 1::2].T)
    prod = (np.empty((2, len(c)), np.uint64), np.empty((2, len(c)), np.uint64))
    odd = _rounds(even, odd, _keys(key), prod)
    out = np.empty((len(c), 4), np.uint32)
    out[:, 0::2], out[:, 1::2] = even.T, odd.T
    return out


def _lanes(n: int) -> tuple:
    """Constants of the scalar path for n blocks: ones in every 64-bit lane, the low 32 bits of every lane,
    the counters (0, 1, ..., n - 1) one per lane, the key increments in every lane, the lanes' offsets."""
    lanes = ((1 << (64 * n)) - 1) // 0xFFFFFFFFFFFFFFFF
    return (lanes, lanes * 0xFFFFFFFF, sum(b << (64 * b) for b in range(1, n)), _W0 * lanes, _W1 * lanes,
            tuple(range(0, 64 * n, 64)))


_LANES = {n: _lanes(n) for n in range(1, _SMALL + 1)}  # they depend on the block count only


def _small(count: int, key: tuple[int, int]) -> np.ndarray:
    """The first `count` normals of a few blocks (batch 1) with Python scalars: numpy calls cost more here.

    Philox runs on all blocks at once, each block a 64-bit lane of one Python int (a 32x32-bit
    product fits its lane; hi and lo halves are shifts and masks). A round's new c1, c3 are the low
    halves of the products, so the products are carried whole and masked when used. Python's float
    arithmetic is IEEE double like numpy's and math.sqrt is correctly rounded like np.sqrt; log, cos
    and sin go through numpy's own ufuncs; so every value equals the array path's.
    """
    if count == 0:
        return np.empty(0, np.float32)
    lanes, low, c0, w0, w1, shifts = _LANES[(count + 3) // 4]
    k0, k1 = key[0] * lanes, key[1] * lanes
    c2 = q0 = q1 = 0  # q0, q1: the last products M0 c0, M1 c2, whose low halves are c3, c1
    for _ in range(_ROUNDS):
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0 = ((p1 >> 32) ^ q1 ^ k0) & low
        c2 = ((p0 >> 32) ^ q0 ^ k1) & low
        q0 = p0
        q1 = p1
        k0 += w0  # keys grow past 32 bits inside their lane; the bits above are masked off with c0, c2
        k1 += w1
    evens = [(((c >> s) & 0xFFFFFFFF) + 0.5) * _INV32 for s in shifts for c in (c0, c2)]  # u of w0, w2
    t = np.array([(((q >> s) & 0xFFFFFFFF) + 0.5) * _TWO_PI_INV32 for s in shifts for q in (q1, q0)])  # w1, w3
    out = []
    for log_u, cos_t, sin_t in zip(np.log(evens).tolist(), np.cos(t).tolist(), np.sin(t).tolist()):
        r = math.sqrt(-2.0 * log_u)
        out += (r * cos_t, r * sin_t)
    del out[count:]
    return np.array(out, dtype=np.float32)


def _bulk(count: int, key: tuple[int, int]) -> np.ndarray:
    """The first `count` normals, computed in chunks of _CHUNK blocks with numpy."""
    n_blocks = (count + 3) // 4
    out = np.empty((n_blocks, 2, 2), np.float32)  # block, (pair 0, pair 1), (cos, sin)
    keys = _keys(key)
    size = max(1, min(n_blocks, _CHUNK))
    even, odd0 = np.empty((2, size), np.uint32), np.empty((2, size), np.uint32)
    prod = (np.empty((2, size), np.uint64), np.empty((2, size), np.uint64))
    r, t, c = np.empty((2, size)), np.empty((2, size)), np.empty((2, size))
    for start in range(0, n_blocks, size):
        n = min(size, n_blocks - start)
        e, o = even[:, :n], odd0[:, :n]
        blocks = np.arange(start, start + n, dtype=np.uint64)
        e[0], e[1] = blocks, 0  # counter (b mod 2^32, b div 2^32, 0, 0): c0, c2
        o[0], o[1] = blocks >> np.uint64(32), 0  # c1, c3
        o = _rounds(e, o, keys, (prod[0][:, :n], prod[1][:, :n]))
        rr, tt, cc = r[:, :n], t[:, :n], c[:, :n]
        np.add(e, 0.5, out=rr)  # w0, w2 -> u = (w + 0.5) 2^-32 -> r = sqrt(-2 ln u)
        np.multiply(rr, _INV32, out=rr)
        np.log(rr, out=rr)
        np.multiply(rr, -2.0, out=rr)
        np.sqrt(rr, out=rr)
        np.add(o, 0.5, out=tt)  # w1, w3 -> t = 2 pi u
        np.multiply(tt, _TWO_PI_INV32, out=tt)
        chunk = out[start:start + n].transpose(1, 0, 2)  # (pair, block, (cos, sin)), a view
        np.cos(tt, out=cc)
        np.multiply(rr, cc, out=chunk[:, :, 0])  # float64 products, rounded to float32 as they are stored
        np.sin(tt, out=tt)
        np.multiply(rr, tt, out=chunk[:, :, 1])
    return out.reshape(-1)[:count]


def normals(seed: int, count: int) -> np.ndarray:
    """The first `count` normals of `seed` as a flat float32 array; seed and count already checked ints."""
    key = (seed & 0xFFFFFFFF, seed >> 32)
    return _small(count, key) if count <= 4 * _SMALL else _bulk(count, key)


MAX_VALUES = 1 << 26  # values one call draws (256 MiB of float32); drawn _CHUNK blocks at a time


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
    return normals(int(seed), count).reshape(shape)
