"""The portable noise generator: Philox known answers, reference vectors, a scalar re-implementation, statistics."""
import math
import struct

import numpy as np
import pytest

from edgevae import EdgeVAEError
from edgevae.noise import philox4x32, standard_normal

# Random123's published known-answer vectors for Philox4x32-10 (its tests/kat_vectors).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

# standard_normal(seed, shape) as float32 bit patterns: what a C#, C++ or JS host must reproduce.
REFERENCE = [
    (0, (8,), [0x3F7DBB33, 0xBF6CB6B0, 0xBF1E1B9F, 0xBEF6D1B2, 0xBE1D5357, 0x3E392A6D, 0x3F54EC98, 0x3E4A2DA3]),
    (42, (2, 3), [0xBF785E5C, 0x3E46ACE8, 0xBF9E28D2, 0x3FF6433B, 0xBD95E030, 0x3E0E7A0F]),
    (2**64 - 1, (5,), [0x3F8C9EC9, 0x3F21DE8F, 0x3F255714, 0x3F3AC13D, 0xBF174864]),
    (123456789012, (4,), [0x400D1123, 0x3FE8B8BE, 0xBF57A611, 0x3F4C4428]),
]


@pytest.mark.parametrize("counter,key,expected", PHILOX_KAT)
def test_philox_known_answers(counter, key, expected):
    assert tuple(philox4x32(np.array([counter], dtype=np.uint32), key)[0]) == expected


@pytest.mark.parametrize("seed,shape,bits", REFERENCE)
def test_reference_vectors(seed, shape, bits):
    eps = standard_normal(seed, shape)
    assert eps.dtype == np.float32 and eps.shape == shape
    assert eps.ravel().view(np.uint32).tolist() == bits


def _scalar_philox(ctr, key):
    """Philox4x32-10 one block at a time, in plain Python ints, as a host language would write it."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0), p1 & 0xFFFFFFFF, ((p0 >> 32) ^ c3 ^ k1), p0 & 0xFFFFFFFF
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c0, c1, c2, c3


def _scalar_normals(seed, count):
    """The README's algorithm, transcribed literally with the math module."""
    out = []
    for block in range((count + 3) // 4):
        w = _scalar_philox((block & 0xFFFFFFFF, block >> 32, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))
        u = [(v + 0.5) / 2**32 for v in w]
        for a, b in ((u[0], u[1]), (u[2], u[3])):
            r, t = math.sqrt(-2.0 * math.log(a)), 2.0 * math.pi * b
            out += [r * math.cos(t), r * math.sin(t)]
    return [struct.unpack("<f", struct.pack("<f", v))[0] for v in out[:count]]  # round to float32


@pytest.mark.parametrize("seed", [0, 1, 7, 2**32, 2**63 + 12345])
def test_vectorised_equals_scalar_transcription(seed):
    # Both round the same float64 values to float32; libm and numpy may differ in the last float64
    # ulp of cos/sin/log, which survives the float32 rounding only rarely: allow one float32 ulp.
    got = standard_normal(seed, (37,))
    want = np.array(_scalar_normals(seed, 37), dtype=np.float32)
    np.testing.assert_array_max_ulp(got, want, maxulp=1)


def test_prefix_property_and_seed_sensitivity():
    big = standard_normal(5, (10, 3))
    assert np.array_equal(standard_normal(5, (4, 3)), big[:4])  # first images don't depend on n
    assert not np.array_equal(standard_normal(6, (10, 3)), big)


def test_statistics_of_a_million_draws():
    eps = standard_normal(2024, (1_000_000,)).astype(np.float64)
    n = eps.size
    # Standard errors: mean 1/sqrt(n) = 0.001, variance sqrt(2/n) = 0.0014; bounds at 5 sigma.
    assert abs(eps.mean()) < 5 / math.sqrt(n)
    assert abs(eps.var() - 1) < 5 * math.sqrt(2 / n)
    # Normality: Kolmogorov-Smirnov distance to Phi; the 0.001 critical value is 1.95/sqrt(n).
    x = np.sort(eps)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.95 / math.sqrt(n)
    # Third and fourth moments of N(0, 1): 0 and 3 (standard errors sqrt(6/n), sqrt(96/n)).
    assert abs(np.mean(eps**3)) < 5 * math.sqrt(15 / n)
    assert abs(np.mean(eps**4) - 3) < 5 * math.sqrt(96 / n)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "3", True, None])
def test_bad_seed_is_refused(seed):
    with pytest.raises(EdgeVAEError, match="seed must be an int"):
        standard_normal(seed, (2,))


def test_small_and_large_paths_agree():
    """A few blocks run on Python scalars (Philox in 64-bit lanes of one int), more on numpy arrays in
    chunks: the same words and the same normals, bit for bit, at every length and across chunk edges."""
    from edgevae.noise import _CHUNK, _SMALL, _bulk, _small

    rng = np.random.default_rng(0)
    keys = [(0, 0), (0xFFFFFFFF, 0xFFFFFFFF), *(tuple(map(int, k)) for k in rng.integers(0, 2**32, (6, 2)))]
    for key in keys:
        for count in range(4 * _SMALL + 1):
            assert _small(count, key).view(np.uint32).tolist() == _bulk(count, key).view(np.uint32).tolist()
        seed = key[0] + (key[1] << 32)
        big = standard_normal(seed, (4 * _CHUNK + 9,))  # two chunks, the second partial
        assert np.array_equal(standard_normal(seed, (4 * _SMALL,)), big[:4 * _SMALL])  # Python-scalar path
        assert np.array_equal(standard_normal(seed, (4 * _CHUNK - 1,)), big[:4 * _CHUNK - 1])  # one chunk
        counter = np.zeros((_CHUNK + 3, 4), np.uint32)
        counter[:, 0] = np.arange(_CHUNK + 3)
        words = philox4x32(counter, key)  # the standalone function: same words as the scalar transcription
        for b in (0, 1, _CHUNK - 1, _CHUNK, _CHUNK + 2):
            assert tuple(words[b]) == _scalar_philox((b, 0, 0, 0), key)
