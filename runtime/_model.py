"""The runtime's Model: sample, encode, decode, reconstruct, interpolate, traverse, manifold.

    model = runtime.load("exports/shapes")
    images = model.sample(64, seed=0)            # (64, C, H, W) float32 in [0, 1]

Conditional models take `labels`: one class (index or name) for the whole call, or one per image.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import _latent, _tiles, _units
from . import spec as S
from ._graphcheck import IMAGE_MACS, RUN_BYTES
from ._images import load_images
from ._load import LazyGraph, check_units, open_export
from .errors import EdgeVAEError, check_int, shorten
from .noise import normals

MAX_BATCH = 65_536  # largest n or N one call accepts; work is run in chunks of CHUNK
CHUNK = 1024  # images per session.run at most (fewer when a model's tensors need it), so memory stays bounded
MAX_IMAGE_VALUES = 1 << 26  # n * C * H * W of the images one call returns (256 MiB of float32)
MAX_LATENT_VALUES = 1 << 24  # n * latent_dim of the latents one call makes or returns (64 MiB of float32)
MAX_TEMPERATURE = 100.0  # eps is scaled by at most this; N(0, I) samples beyond ~5 sigma are not images
MAX_THREADS = 256  # onnxruntime intra-op threads load accepts
_X_HAT = ["x_hat"]
_MAX_SEED = 2**64 - 1
_SUM = np.add.reduce
_SMALL = 4096  # up to this many values, _finite tries one sum first


def _finite(a: np.ndarray) -> bool:
    """Whether every value of a float32 array is finite.

    A small array is summed first, in one C call: NaN and Inf propagate, so a finite sum means every value
    is finite (a batch-1 image costs a third less than isfinite(a).all(), which builds a bool array). A
    sum that is not finite (a NaN, or finite values overflowing float32) gets the exact check."""
    if a.size <= _SMALL:
        with np.errstate(over="ignore", invalid="ignore"):  # large finite values may overflow the sum
            if math.isfinite(_SUM(a, axis=None)):
                return True
    return bool(np.isfinite(a).all())


_FLOAT32_MAX = float(np.finfo(np.float32).max)


class Encoding(NamedTuple):
    """What encode returns, each float32 (N, *latent_shape): z = mu + exp(0.5 * logvar) * eps.

    For the plain autoencoder (spec model "ae") z is the code, mu is z and logvar is None.
    """
    z: np.ndarray
    mu: np.ndarray
    logvar: np.ndarray | None


class Model:
    """A loaded export: two onnxruntime sessions and their spec. Create with `load`; thread-safe."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spinning: bool = False,
                 variant: str = "fp32", expect_sha256: str | None = None, tile: int | None = None,
                 overlap: int | None = None, low_memory: bool = False, max_run_bytes: int = RUN_BYTES,
                 max_image_macs: int = IMAGE_MACS):
        if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
            raise EdgeVAEError(f"load: path must be a str or path-like, got {type(path).__name__}")
        if threads is not None:  # more threads than cores gain nothing, and each reserves a stack
            threads = min(check_int(threads, "load: threads", 1, MAX_THREADS), os.cpu_count() or 1)
        if not isinstance(spinning, bool):
            raise EdgeVAEError(f"load: spinning must be True or False, got {spinning!r}")
        if not isinstance(variant, str) or not S.IDENTIFIER.fullmatch(variant):
            raise EdgeVAEError(f"load: variant must be a variant name such as 'fp32', got {shorten(variant)}")
        if expect_sha256 is not None:
            if not isinstance(expect_sha256, str) or not S.SHA256.fullmatch(expect_sha256.lower()):
                raise EdgeVAEError(f"load: expect_sha256 must be 64 hex digits (the sha256 of manifest.json), "
                                   f"got {shorten(expect_sha256)}")
            expect_sha256 = expect_sha256.lower()
        max_run_bytes = check_int(max_run_bytes, "load: max_run_bytes", 1 << 20, 1 << 40)
        max_image_macs = check_int(max_image_macs, "load: max_image_macs", 10**6, 10**15)
        if not isinstance(low_memory, bool):
            raise EdgeVAEError(f"load: low_memory must be True or False, got {low_memory!r}")
        self.path = Path(path)
        self.low_memory = low_memory  # exact tiles: each unit's session lives only while the unit runs
        self.variant = variant
        self.manifest, self.specs, sessions, self.manifest_sha256 = open_export(
            self.path, threads, spinning, variant, expect_sha256, CHUNK, max_run_bytes, max_image_macs)
        self.spec: dict = self.specs["decoder"]
        self.kind: str = self.spec["model"]  # "vae", or "ae" for the plain autoencoder baseline
        self.classes: list[str] | None = self.spec["classes"]  # class names of a conditional model
        self.latent_shape: tuple[int, ...] = tuple(self.spec["latent_shape"])  # (D,) or (C, h, w)
        self.latent_dim: int = math.prod(self.latent_shape)  # elements per latent
        self.image_shape: tuple[int, int, int] = tuple(self.spec["image_shape"])
        self.image_mode: str = self.spec["image_mode"]  # "L", "RGB" or "RGBA"
        self.prior: str | None = self.spec["prior"]  # "standard_normal", or None: sample() refuses
        self.preprocessing: dict = self.spec["preprocessing"]  # how load_images prepares files for this model
        self._encoder, self._decoder = sessions["encoder"], sessions["decoder"]
        # exact tiled decoding's and encoding's graphs by role (runtime/_units.py), or None
        self._units = {role: self._tiled(role, threads, spinning) for role in _units.ROLES}
        # default tiling of decode/encode for tileable exports (runtime/_tiles.py); None: whole images
        self.tiling = None if tile is None else _tiles.check(self.spec, tile, overlap, "linear", "load")
        # sample(1, seed=s) of an unconditional model decoding whole latents: the steps of the general path that
        # do nothing at batch 1 left out (same noise, same checks); None where any of them matters
        plain = (self.prior is not None and self.classes is None and self.tiling is None
                 and self._decoder.tile_scale is None and self._decoder.max_cells is None)
        self._one_shape = ((1, *self.latent_shape), (1, *self.image_shape)) if plain else None

    def _tiled(self, role: str, threads, spinning) -> list[LazyGraph] | None:
        """The tiled decoder's or encoder's units (spec `tiled_decoder` / `tiled_encoder`) as Graphs opened
        on first use."""
        plan = self.spec.get(_units.PLANS[role])
        files = self.manifest["variants"][self.variant].get(_units.ROLES[role])
        if plan is None or files is None:
            return None
        if files != [u["file"] for u in plan["units"]]:
            raise EdgeVAEError(f"{self.path}: the manifest's {_units.ROLES[role]} files {files} are not the spec's "
                               f"{_units.PLANS[role]} units")
        check_units(self.path, files, self.manifest)  # listed, regular files, hashed now, within the size budget
        where = self.path.resolve()  # sessions are made later: not affected by a change of working directory
        return [LazyGraph(where, unit["file"], self.manifest, f"{_units.ROLES[role]}.{k:02d}",
                          _units.signature(unit, role), threads, spinning)
                for k, unit in enumerate(plan["units"])]

    def _units_run(self, role: str, tiling, run_units):
        """Run the exact tiled decoder or encoder within load's bound on one run; any failure an EdgeVAEError."""
        graph = self._decoder if role == "decoder" else self._encoder
        if graph.max_cells is not None and tiling[0] > graph.max_cells:
            raise EdgeVAEError(f"{role[:6]}: tiles of {tiling[0]} cells are more than this model's graphs may take "
                               f"in one run within max_run_bytes and max_image_macs; use tile={graph.max_cells} "
                               f"or less, or load with larger bounds")
        graphs = self._units[role]
        try:
            return run_units(self.spec[_units.PLANS[role]]["units"], lambda k, feed: graphs[k].run(None, feed),
                             self._release(graphs))
        except (ValueError, IndexError) as e:  # a unit's output that does not fit the plan
            raise EdgeVAEError(f"{self.path}: the tiled {role} broke its plan ({e})") from None

    def _release(self, graphs: list[LazyGraph]):
        """With low_memory, what lets a unit's session go once it has run: one unit's weights at a time."""
        return (lambda k: graphs[k].release()) if self.low_memory else None

    def load_images(self, paths, *, notes: list | None = None) -> np.ndarray:
        """Image files as this model's input x (N, C, H, W) in [0, 1], prepared as its training images were
        (the spec's `preprocessing`: mode, alpha, fit, resampling); see edgevae.load_images."""
        return load_images(paths, self.image_shape, self.preprocessing, notes=notes)

    def __repr__(self) -> str:
        return (f"Model({str(self.path)!r}, kind={self.kind!r}, variant={self.variant!r}, "
                f"latent_shape={self.latent_shape}, "
                f"image_shape={self.image_shape}{f', classes={len(self.classes)}' if self.classes else ''})")

    # -- checks --------------------------------------------------------------------------------
    def _batch(self, what: str, n) -> int:
        return self._budget(what, check_int(n, f"{what}: n", 1, MAX_BATCH))

    def _budget(self, what: str, n: int) -> int:
        """n, if n images and n latents stay within what one call may return."""
        image_values = math.prod(self.image_shape)
        if n * image_values > MAX_IMAGE_VALUES or n * self.latent_dim > MAX_LATENT_VALUES:
            most = min(MAX_IMAGE_VALUES // image_values, MAX_LATENT_VALUES // self.latent_dim)
            raise EdgeVAEError(f"{what}: {n:,} images at once is more than this model's {most:,} per call "
                               f"({'x'.join(map(str, self.image_shape))} images, latents of {self.latent_dim:,}); "
                               f"call in smaller batches")
        return n

    def _array(self, what: str, name: str, value, shape: tuple, lo: float | None = None, hi: float | None = None):
        """`value` as C-contiguous float32 of `shape` (None = any batch size), finite and inside [lo, hi]."""
        try:
            a = value if isinstance(value, np.ndarray) else np.asarray(value)
        except (ValueError, TypeError) as e:  # ragged nested lists and the like
            raise EdgeVAEError(f"{what}: {name} must be an array, got {type(value).__name__} ({e})") from None
        if a.dtype.kind not in "fiu":  # float, signed or unsigned int; not bool, complex, str, object
            raise EdgeVAEError(f"{what}: {name} must be a float array, got dtype {a.dtype}")
        if a.ndim != len(shape) or any(s is not None and s != g for s, g in zip(shape, a.shape)):
            dims = ["N" if s is None else str(s) for s in shape]
            expected = "(" + ", ".join(dims) + ("," if len(shape) == 1 else "") + ")"
            raise EdgeVAEError(f"{what}: {name} must have shape {expected}, got {a.shape}")
        if not 1 <= a.shape[0] <= MAX_BATCH:
            raise EdgeVAEError(f"{what}: {name} batch size must be in [1, {MAX_BATCH}], got {a.shape[0]}")
        self._budget(what, a.shape[0])
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            with np.errstate(over="ignore"):  # beyond float32's range becomes Inf, refused just below
                a = np.ascontiguousarray(a, dtype=np.float32)
        if not _finite(a):
            raise EdgeVAEError(f"{what}: {name} contains NaN or Inf, or values beyond float32's range "
                               f"({int((~np.isfinite(a)).sum())} values)")
        if lo is not None and (a.min() < lo or a.max() > hi):
            raise EdgeVAEError(f"{what}: {name} values must lie in [{lo}, {hi}], got [{a.min():.4g}, {a.max():.4g}]")
        return a

    def _labels(self, what: str, labels, n: int) -> np.ndarray | None:
        """int64 (n,) class indices for a conditional model from an index, a name, or one per image."""
        if self.classes is None:
            if labels is not None:
                raise EdgeVAEError(f"{what}: this model is unconditional; it takes no labels")
            return None
        if labels is None:
            raise EdgeVAEError(f"{what}: this model is conditional: pass labels (an index or name from "
                               f"{self.classes}, or one per image)")
        if isinstance(labels, (str, int, np.integer)):
            items = [labels]
        else:
            items = list(np.asarray(labels, dtype=object).ravel())
        if len(items) not in (1, n):
            raise EdgeVAEError(f"{what}: labels must be one class or {n} (one per image), got {len(items)}")
        index = []
        for item in items:
            if isinstance(item, str):
                if item not in self.classes:
                    raise EdgeVAEError(f"{what}: unknown class {item!r}; classes are {self.classes}")
                index.append(self.classes.index(item))
            else:
                index.append(check_int(item, f"{what}: a label (a class name, or an index)", 0, len(self.classes) - 1))
        return np.array(index * n if len(index) == 1 else index, dtype=np.int64)

    def _eps(self, what: str, n: int, seed, eps, temperature: float) -> np.ndarray:
        if eps is not None and seed is not None:
            raise EdgeVAEError(f"{what}: pass seed or eps, not both")
        if type(temperature) is not float or not 0.0 <= temperature <= MAX_TEMPERATURE:  # a float: checked
            if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)) \
                    or not 0 <= temperature <= MAX_TEMPERATURE:
                raise EdgeVAEError(f"{what}: temperature must be a number in [0, {MAX_TEMPERATURE}], "
                                   f"got {temperature!r}")
        if eps is None:
            seed = int.from_bytes(os.urandom(8), "little") if seed is None else check_int(seed, "seed", 0, _MAX_SEED)
            eps = normals(seed, n * self.latent_dim).reshape(n, *self.latent_shape)  # = standard_normal(seed, ...)
        else:
            eps = self._array(what, "eps", eps, (n, *self.latent_shape))
            if temperature > 1 and float(np.abs(eps).max()) * temperature > _FLOAT32_MAX:
                raise EdgeVAEError(f"{what}: temperature {temperature} times eps overflows float32 "
                                   f"(max |eps| = {np.abs(eps).max():.3g})")
        return eps * np.float32(temperature) if temperature != 1 else eps

    # -- the API -------------------------------------------------------------------------------
    def _feed(self, chunk: int, **arrays) -> list[dict]:
        """Feeds for session.run, in chunks of `chunk` images; None arrays (no y, no eps) are left out."""
        n = len(next(a for a in arrays.values() if a is not None))
        return [{k: a[i:i + chunk] for k, a in arrays.items() if a is not None} for i in range(0, n, chunk)]

    def decode(self, z, *, labels=None, tile: int | None = None, overlap: int | None = None) -> np.ndarray:
        """Decode latents z (N, *latent_shape) to the decoder's mean images (N, C, H, W), float32 in [0, 1].

        tile, overlap (tileable exports): decode tile x tile latent cells at a time. With the export's tiled
        decoder (diffusers) exactly, the whole decode up to float32 rounding (runtime/_units.py; overlap is
        not used); otherwise overlapping by `overlap` (default tile // 4) and blended (runtime/_tiles.py).
        """
        z = self._array("decode", "z", z, (None, *self.latent_shape))
        tiling = self.tiling if tile is None else _tiles.check(self.spec, tile, overlap, "linear", "decode")
        return self._decode(z, self._labels("decode", labels, len(z)), tiling)

    def _decode(self, z: np.ndarray, y: np.ndarray | None, tiling=None) -> np.ndarray:
        """decode on checked inputs: z float32 C-contiguous (N, *latent_shape), y int64 (N,) or None."""
        # self._decoder checks what it returns: shape, finite, in [0, 1] (runtime/_load.py Graph)
        tiling = tiling or self.tiling
        if tiling is not None and self._units["decoder"] is not None and y is None:
            out = self._units_run("decoder", tiling, lambda units, run, release: _units.decode(
                units, run, z, tiling[0], release))
            s = self.spec["latent_scale"]  # a tileable model decodes latents of any h, w: s pixels per cell
            want = (len(z), self.image_shape[0], z.shape[2] * s, z.shape[3] * s)
            if out.shape != want or not (out.min() >= 0 and out.max() <= 1):  # NaN fails
                raise EdgeVAEError(f"{self.path}: the tiled decoder returned {out.shape} values in "
                                   f"[{out.min():.4g}, {out.max():.4g}], not images {want} in [0, 1]")
            return out
        if tiling is not None:
            return _tiles.decode(lambda part: self._decoder.run(_X_HAT, {"z": part})[0], z,
                                 self.spec["latent_scale"], self.image_shape[0], *tiling)
        if len(z) <= self._decoder.chunk:
            return self._decoder.run(_X_HAT, {"z": z} if y is None else {"z": z, "y": y})[0]
        chunks = self._feed(self._decoder.chunk, z=z, y=y)
        return np.concatenate([self._decoder.run(_X_HAT, feed)[0] for feed in chunks])

    def sample(self, n: int, *, seed: int | None = None, eps=None, temperature: float = 1.0, labels=None) -> np.ndarray:
        """Generate n images (N, C, H, W) float32 in [0, 1] by decoding z = temperature * eps.

        eps is drawn with `edgevae.standard_normal(seed, (n, *latent_shape))` unless given; with neither
        seed nor eps a fresh seed is drawn from the OS. The same seed always gives the same images,
        and the first k images of a sample of n are those of a sample of k. A model whose spec has no
        prior (an autoencoder, a VAE not trained towards N(0, I)) refuses: decode your own latents instead.
        """
        if self.prior is None:
            why = self.spec.get("prior_note") or ("a plain autoencoder is not trained towards N(0, I)"
                                                  if self.kind == "ae" else "its spec says so")
            raise EdgeVAEError(f"sample: this model has no prior to sample from ({why}); encode images and decode, "
                               f"interpolate or traverse their latents instead")
        if (type(n) is int and n == 1 and type(seed) is int and self._one_shape is not None and eps is None
                and labels is None and type(temperature) is float and temperature == 1.0 and 0 <= seed <= _MAX_SEED):
            latent, image = self._one_shape  # the noise as normals(seed, ...) draws it; x_hat checked as run does
            return self._decoder.x_hat_of(normals(seed, self.latent_dim).reshape(latent), image)
        n = self._batch("sample", n)
        return self._decode(self._eps("sample", n, seed, eps, temperature), self._labels("sample", labels, n))

    def encode(self, x, *, seed: int | None = None, eps=None, temperature: float = 1.0, labels=None,
               tile: int | None = None, overlap: int | None = None) -> Encoding:
        """Encode images x (N, C, H, W) in [0, 1] to (z, mu, logvar), z = mu + exp(0.5 logvar) * eps.

        eps (N, *latent_shape) is drawn from `seed` as in `sample` unless given; temperature scales it. The plain
        autoencoder takes no noise: its z is its code (pass neither seed nor eps). tile, overlap: as in decode,
        in latent cells (tileable exports).
        """
        tiling = self.tiling if tile is None else _tiles.check(self.spec, tile, overlap, "linear", "encode")
        x = self._array("encode", "x", x, (None, *self.image_shape), 0.0, 1.0)
        y = self._labels("encode", labels, len(x))
        if self.kind == "ae":
            if eps is not None or seed is not None:
                raise EdgeVAEError("encode: this model is a plain autoencoder; it takes no seed or eps")
            feeds = self._feed(self._encoder.chunk, x=x, y=y)
            z = np.concatenate([self._encoder.run(None, feed)[0] for feed in feeds])
            return Encoding(z, z, None)
        eps = self._eps("encode", len(x), seed, eps, temperature)
        if tiling is not None and self._units["encoder"] is not None and y is None:
            parts = self._units_run("encoder", tiling, lambda units, run, release: _units.encode(
                units, run, x, eps, tiling[0], release))
            s = self.spec["latent_scale"]
            want = (len(x), self.latent_shape[0], x.shape[2] // s, x.shape[3] // s)
            if len(parts) != 3 or any(p.shape != want for p in parts):
                raise EdgeVAEError(f"{self.path}: the tiled encoder's outputs are not z, mu, logvar {want}")
            return Encoding(*parts)
        if tiling is not None:
            return Encoding(*_tiles.encode(lambda xt, et: self._encoder.run(None, {"x": xt, "eps": et}), x, eps,
                                           self.spec["latent_scale"], self.latent_shape[0], *tiling))
        parts = [self._encoder.run(None, feed) for feed in self._feed(self._encoder.chunk, x=x, eps=eps, y=y)]
        return Encoding(*(np.concatenate([p[k] for p in parts]) for k in range(3)))

    def encode_mean(self, x, *, labels=None) -> np.ndarray:
        """The encoder's mean mu (N, *latent_shape) for images x (N, C, H, W): the deterministic encoding."""
        if self.kind == "ae":
            return self.encode(x, labels=labels).z
        return self.encode(x, seed=0, temperature=0.0, labels=labels).mu

    def reconstruct(self, x, *, sampled: bool = False, seed: int | None = None, labels=None) -> np.ndarray:
        """Decode the encoding of x: from mu (default), or from a sampled z when `sampled` (seeded)."""
        if not sampled and seed is not None:
            raise EdgeVAEError("reconstruct: seed only applies with sampled=True")
        z = self.encode(x, seed=seed, labels=labels).z if sampled else self.encode_mean(x, labels=labels)
        return self.decode(z, labels=labels)

    def _point(self, what: str, value, labels) -> np.ndarray:
        """One latent (latent_shape) from a latent, or from one image (C, H, W) via the encoder's mean."""
        try:
            a = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise EdgeVAEError(f"{what}: expected a latent or an image array, got {type(value).__name__} "
                               f"({e})") from None
        if a.shape in (self.latent_shape, (1, *self.latent_shape)):
            return self._array(what, "latent", a.reshape(1, *self.latent_shape), (1, *self.latent_shape))[0]
        if a.shape in (self.image_shape, (1, *self.image_shape)) and self.image_shape != self.latent_shape:
            return self.encode_mean(a.reshape(1, *self.image_shape), labels=labels)[0]
        raise EdgeVAEError(f"{what}: expected a latent of shape {self.latent_shape} or an image of shape "
                           f"{self.image_shape}, got {a.shape}")

    def interpolate(self, a, b, steps: int = 8, method: str = "lerp", *, labels=None) -> np.ndarray:
        """Decode `steps` points from a to b (ends included): images (steps, C, H, W).

        a and b are each a latent (latent_shape) or an image (C, H, W), which is encoded to its mean.
        method "lerp" is a straight line; "slerp" follows the sphere, see runtime._latent.interpolate
        (a spatial latent is treated as one vector). A conditional model takes one class for the whole path. A
        fitted mixture's first number, which picks the component, goes from a's to b's half way, not through the
        components between them (runtime._latent.held_numbers).
        """
        a, b = self._point("interpolate", a, labels), self._point("interpolate", b, labels)
        self._budget("interpolate", check_int(steps, "interpolate: steps", 2, 10_000))
        path = _latent.interpolate(a.ravel(), b.ravel(), steps, method,  # (steps, latent_dim)
                                   held=_latent.held_numbers(self.spec))
        return self.decode(path.reshape(len(path), *self.latent_shape), labels=labels)

    def traverse(self, dim: int, values=None, z=None, steps: int = 9, span: float = 3.0, *, labels=None) -> np.ndarray:
        """Decode z with latent element `dim` swept over `values` (default linspace(-span, span, steps)).

        z (latent_shape) defaults to the prior mean, zeros; `dim` indexes the flattened latent (for a
        spatial latent (C, h, w), element c * h * w + i * w + j). Returns images (len(values), C, H, W).
        """
        base = np.zeros(self.latent_dim, np.float32) if z is None else self._point("traverse", z, labels).ravel()
        if values is None:
            steps = check_int(steps, "traverse: steps", 1, 10_000)
            if isinstance(span, bool) or not isinstance(span, (int, float, np.integer, np.floating)) \
                    or not 0 <= span <= _FLOAT32_MAX:
                raise EdgeVAEError(f"traverse: span must be a number in [0, float32's max], got {span!r}")
            values = np.linspace(-span, span, int(steps))
        else:
            try:
                values = np.asarray(values, np.float64).ravel()
            except (ValueError, TypeError):
                raise EdgeVAEError(f"traverse: values must be numbers, got {values!r}") from None
        if not 1 <= values.size <= MAX_BATCH or not np.abs(values).max() <= _FLOAT32_MAX:  # NaN fails too
            raise EdgeVAEError(f"traverse: values must be 1 to {MAX_BATCH} finite float32 numbers, got {values.size} "
                               f"values{f' up to {np.abs(values).max():.3g}' if values.size else ''}")
        self._budget("traverse", values.size)
        path = _latent.traverse(base, dim, values)  # (len(values), latent_dim)
        return self.decode(path.reshape(len(path), *self.latent_shape), labels=labels)

    def manifold(self, steps: int = 20, *, labels=None) -> np.ndarray:
        """For a 2-D latent, decode a steps x steps grid of normal quantiles: images (steps^2, C, H, W), row-major."""
        if self.latent_shape != (2,):
            raise EdgeVAEError(f"manifold: needs a 2-D latent, this model's latent is {self.latent_shape}")
        return self.decode(_latent.manifold(steps), labels=labels)


def load(path: str | os.PathLike, *, expect_sha256: str | None = None, threads: int | None = None,
         spinning: bool = False, variant: str = "fp32", tile: int | None = None, overlap: int | None = None,
         low_memory: bool = False, max_run_bytes: int = RUN_BYTES, max_image_macs: int = IMAGE_MACS) -> Model:
    """Load an export directory, checking its files, its graphs and that both come from one export.

    expect_sha256: pin the export an app was tested with, the sha256 of its manifest.json (which lists
    every file's sha256); any other export is refused. `edgevae info DIR` prints it.
    variant: "fp32" (default), or "int8" / "fp16" when the export wrote them (`edgevae export --int8`).
    threads: onnxruntime intra-op threads, 1 to MAX_THREADS, at most the machine's cores (None: one per
    physical core). spinning: let idle worker threads spin for lower latency at the cost of CPU (off by
    default, right for desktop apps). tile, overlap: tileable exports decode and encode in tiles of
    tile x tile latent cells by default (Model.decode). low_memory: with an export's tiled decoder or
    encoder, create each unit's session when the unit runs and let it go after, so one unit's weights are in
    memory at a time (each call then builds the sessions again: slower). max_run_bytes: the most memory one
    run of a graph may hold, by load's estimate from the graph (default 256 MiB); max_image_macs: the most
    multiply-adds one image may cost (default 2.5e10, about a second of one laptop core): a graph that needs
    more for one
    image is refused, larger batches run in chunks, and a tileable graph too large runs only in tiles.
    Raises EdgeVAEError for a missing, tampered, mismatched or malformed file (docs/design.md, "The spec").
    """
    return Model(path, threads=threads, spinning=spinning, variant=variant, expect_sha256=expect_sha256,
                 tile=tile, overlap=overlap, low_memory=low_memory, max_run_bytes=max_run_bytes,
                 max_image_macs=max_image_macs)
