"""Paths through latent space: lerp and slerp between two points, one-dimension traversals, the 2-D manifold grid."""
from __future__ import annotations

import numpy as np

from .errors import EdgeVAEError, check_int

METHODS = ("lerp", "slerp")


def interpolate(a: np.ndarray, b: np.ndarray, steps: int, method: str = "lerp",
                held: tuple[int, ...] = ()) -> np.ndarray:
    """`steps` points from a to b (both included), float32 (steps, D).

    slerp follows the great circle between the two directions while interpolating the norms, which
    keeps intermediate points at the typical radius of N(0, I) samples instead of cutting through the
    low-density region near the origin (White, "Sampling Generative Networks", 2016).
    held: numbers that are not interpolated but kept at the nearer end's value (a's for t < 1/2, then b's), and
    left out of slerp's norms: a fitted mixture's first number, which picks the component (`held_numbers`).
    """
    if method not in METHODS:
        raise EdgeVAEError(f"interpolate: method must be one of {', '.join(METHODS)}, got {method!r}")
    steps = check_int(steps, "interpolate: steps", 2, 10_000)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.linspace(0.0, 1.0, int(steps))[:, None]  # (steps, 1)
    free = np.setdiff1d(np.arange(a.shape[0]), np.asarray(held, dtype=np.int64))
    path = np.empty((int(steps), a.shape[0]))
    path[:, free] = _path(a[free], b[free], t, method)
    for i in held:
        path[:, i] = np.where(t[:, 0] < 0.5, a[i], b[i])
    return path.astype(np.float32)


def _path(a: np.ndarray, b: np.ndarray, t: np.ndarray, method: str) -> np.ndarray:
    """lerp or slerp from a to b at t (steps, 1), float64 (steps, D)."""
    if method == "lerp":
        return (1 - t) * a + t * b
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return (1 - t) * a + t * b  # no direction to follow from the origin
    omega = np.arccos(np.clip(np.dot(a / na, b / nb), -1.0, 1.0))
    if np.sin(omega) < 1e-6:  # (anti)parallel: the great circle is not unique; fall back to lerp
        return (1 - t) * a + t * b
    direction = (np.sin((1 - t) * omega) * a / na + np.sin(t * omega) * b / nb) / np.sin(omega)
    return direction * ((1 - t) * na + t * nb)


def held_numbers(spec: dict) -> tuple[int, ...]:
    """The latent numbers interpolation keeps at the nearer end: a fitted mixture's first number picks its component
    (train/prior.py), and a straight line through it would cross every component between the ends'."""
    return (0,) if (spec.get("prior_fit") or {}).get("kind") == "gaussian-mixture" else ()


def traverse(base: np.ndarray, dim: int, values: np.ndarray) -> np.ndarray:
    """Copies of base (D,) with dimension `dim` set to each of `values`: float32 (len(values), D)."""
    dim = check_int(dim, "traverse: dim", 0, base.shape[0] - 1)
    z = np.repeat(base[None, :].astype(np.float32), len(values), axis=0)
    z[:, dim] = values
    return z


def manifold(steps: int, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """A steps x steps grid of 2-D latents at normal quantiles (Kingma & Welling 2014, Fig. 4), float32 (steps^2, 2).

    Row r, column c holds (Phi^-1(p_c), Phi^-1(p_r')), with p evenly spaced in [low, high] and rows
    running from high to low so that "up" in the picture is +z2.
    """
    steps = check_int(steps, "manifold: steps", 2, 100)
    from statistics import NormalDist  # imported here: only the manifold needs it

    q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(low, high, int(steps))])
    z2, z1 = np.meshgrid(q[::-1], q, indexing="ij")  # (steps, steps): rows = z2 descending, cols = z1
    return np.stack([z1.ravel(), z2.ravel()], axis=1).astype(np.float32)
