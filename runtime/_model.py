"""Load an export directory and run its two graphs: sample, encode, decode, reconstruct.

    model = runtime.load("exports/shapes")
    images = model.sample(64, seed=0)            # (64, C, H, W) float32 in [0, 1]
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort

from . import _latent
from . import spec as S
from .errors import EdgeVAEError
from .noise import standard_normal

MAX_BATCH = 65_536  # largest n or N one call accepts; work is run in chunks of CHUNK
CHUNK = 1024  # images per session.run, so memory stays bounded for large n
_X_HAT = list(S.DECODER_OUTPUTS)


class Encoding(NamedTuple):
    """What encode returns: z = mu + exp(0.5 * logvar) * eps, each float32 (N, D)."""
    z: np.ndarray
    mu: np.ndarray
    logvar: np.ndarray


def _session(data: bytes, directory: Path, threads: int | None, spinning: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # A graph is loaded from its verified bytes; should it name external data, onnxruntime would resolve
    # the path against the process's working directory. Pin it to the export directory, which
    # onnxruntime then refuses to leave ("../", absolute paths, links out).
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(directory.resolve()))
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime picks the physical core count
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # Spinning threads keep a core busy between calls; an idle desktop app should burn no CPU.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def _read_manifest(path: Path) -> dict:
    manifest_path = path / S.MANIFEST
    if not path.is_dir():
        raise EdgeVAEError(f"{path}: not an export directory (no such directory)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise EdgeVAEError(f"{path}: not an export directory ({S.MANIFEST} is missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgeVAEError(f"{manifest_path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise EdgeVAEError(f"{manifest_path}: expected an object with a 'files' map")
    return manifest


def _read_verified(path: Path, name: str, manifest: dict) -> bytes:
    """The bytes of `name`, after checking them against the manifest's sha256."""
    entry = manifest["files"].get(name)
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise EdgeVAEError(f"{path / S.MANIFEST}: no sha256 listed for {name}")
    try:
        data = (path / name).read_bytes()
    except FileNotFoundError:
        raise EdgeVAEError(f"{path}: {name} is missing") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise EdgeVAEError(f"{path / name}: sha256 {digest[:12]}... does not match the manifest's "
                           f"{str(entry['sha256'])[:12]}... (file changed or corrupt)")
    return data


def _check_signature(session: ort.InferenceSession, name: str, inputs: tuple, outputs: tuple) -> None:
    got_in = tuple(i.name for i in session.get_inputs())
    got_out = tuple(o.name for o in session.get_outputs())
    if got_in != inputs or got_out != outputs:
        raise EdgeVAEError(f"{name}: expected inputs {inputs} -> outputs {outputs}, got {got_in} -> {got_out}")


class Model:
    """A loaded export: two onnxruntime sessions and their spec. Create with `load`; thread-safe."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spinning: bool = False,
                 variant: str = "fp32"):
        self.path = Path(path)
        manifest = _read_manifest(self.path)
        files = manifest.get("variants", {}).get(variant)
        if not isinstance(files, dict):
            raise EdgeVAEError(f"{self.path}: no '{variant}' variant in this export "
                               f"(it has: {', '.join(manifest.get('variants', {})) or 'none'})")
        self.variant = variant
        specs, sessions = {}, {}
        for role, inputs, outputs in (("encoder", S.ENCODER_INPUTS, S.ENCODER_OUTPUTS),
                                      ("decoder", S.DECODER_INPUTS, S.DECODER_OUTPUTS)):
            name = files.get(role)
            if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
                raise EdgeVAEError(f"{self.path / S.MANIFEST}: bad {role} file name {name!r} for variant '{variant}'")
            data = _read_verified(self.path, name, manifest)
            try:
                session = _session(data, self.path, threads, spinning)
            except Exception as e:  # onnxruntime raises its own types for unparsable graphs
                raise EdgeVAEError(f"{self.path / name}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
            text = session.get_modelmeta().custom_metadata_map.get(S.METADATA_KEY)
            if text is None:
                raise EdgeVAEError(f"{self.path / name}: no '{S.METADATA_KEY}' metadata (not an EdgeVAE graph)")
            specs[role] = S.loads(text, str(self.path / name))
            if (specs[role]["role"], specs[role]["variant"]) != (role, variant):
                raise EdgeVAEError(f"{self.path / name}: expected the {variant} {role}, "
                                   f"got the {specs[role]['variant']} {specs[role]['role']}")
            _check_signature(session, str(self.path / name), inputs, outputs)
            sessions[role] = session
        pair_ids = {specs["encoder"]["pair_id"], specs["decoder"]["pair_id"], manifest.get("pair_id")}
        if len(pair_ids) != 1:
            raise EdgeVAEError(f"{self.path}: encoder, decoder and manifest come from different exports "
                               f"(pair_id encoder={specs['encoder']['pair_id']}, decoder={specs['decoder']['pair_id']}, "
                               f"manifest={manifest.get('pair_id')})")
        self.specs: dict[str, dict] = specs  # by role: "encoder", "decoder"
        self.spec: dict = specs["decoder"]
        self.manifest: dict = manifest
        self.latent_dim: int = self.spec["latent_dim"]
        self.image_shape: tuple[int, int, int] = tuple(self.spec["image_shape"])
        self._encoder, self._decoder = sessions["encoder"], sessions["decoder"]

    def __repr__(self) -> str:
        return (f"Model({str(self.path)!r}, variant={self.variant!r}, latent_dim={self.latent_dim}, "
                f"image_shape={self.image_shape})")

    # -- checks --------------------------------------------------------------------------------
    def _batch(self, what: str, n) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_BATCH:
            raise EdgeVAEError(f"{what}: n must be an int in [1, {MAX_BATCH}], got {n!r}")
        return int(n)

    def _array(self, what: str, name: str, value, shape: tuple, lo: float | None = None, hi: float | None = None):
        """`value` as C-contiguous float32 of `shape` (None = any batch size), finite and inside [lo, hi]."""
        a = value if isinstance(value, np.ndarray) else np.asarray(value)
        if a.dtype.kind not in "fiu":  # float, signed or unsigned int; not bool, complex, str, object
            raise EdgeVAEError(f"{what}: {name} must be a float array, got dtype {a.dtype}")
        if a.ndim != len(shape) or any(s is not None and s != g for s, g in zip(shape, a.shape)):
            expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise EdgeVAEError(f"{what}: {name} must have shape {expected}, got {a.shape}")
        if not 1 <= a.shape[0] <= MAX_BATCH:
            raise EdgeVAEError(f"{what}: {name} batch size must be in [1, {MAX_BATCH}], got {a.shape[0]}")
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():
            raise EdgeVAEError(f"{what}: {name} contains NaN or Inf ({int((~np.isfinite(a)).sum())} values)")
        if lo is not None and (a.min() < lo or a.max() > hi):
            raise EdgeVAEError(f"{what}: {name} values must lie in [{lo}, {hi}], got [{a.min():.4g}, {a.max():.4g}]")
        return a

    def _eps(self, what: str, n: int, seed, eps, temperature: float) -> np.ndarray:
        if eps is not None and seed is not None:
            raise EdgeVAEError(f"{what}: pass seed or eps, not both")
        if not isinstance(temperature, (int, float, np.floating)) or not 0 <= temperature < float("inf"):
            raise EdgeVAEError(f"{what}: temperature must be a finite number >= 0, got {temperature!r}")
        if eps is None:
            eps = standard_normal(secrets.randbits(64) if seed is None else seed, (n, self.latent_dim))
        else:
            eps = self._array(what, "eps", eps, (n, self.latent_dim))
        return eps * np.float32(temperature) if temperature != 1 else eps

    # -- the API -------------------------------------------------------------------------------
    def decode(self, z) -> np.ndarray:
        """Decode latents z (N, D) to the decoder's mean images (N, C, H, W), float32 in [0, 1]."""
        z = self._array("decode", "z", z, (None, self.latent_dim))
        if len(z) <= CHUNK:
            return self._decoder.run(_X_HAT, {"z": z})[0]
        return np.concatenate([self._decoder.run(_X_HAT, {"z": z[i:i + CHUNK]})[0] for i in range(0, len(z), CHUNK)])

    def sample(self, n: int, *, seed: int | None = None, eps=None, temperature: float = 1.0) -> np.ndarray:
        """Generate n images (N, C, H, W) float32 in [0, 1] by decoding z = temperature * eps.

        eps is drawn with `runtime.noise.standard_normal(seed, (n, D))` unless given; with neither
        seed nor eps a fresh seed is drawn from the OS. The same seed always gives the same images,
        and the first k images of a sample of n are those of a sample of k.
        """
        n = self._batch("sample", n)
        return self.decode(self._eps("sample", n, seed, eps, temperature))

    def encode(self, x, *, seed: int | None = None, eps=None, temperature: float = 1.0) -> Encoding:
        """Encode images x (N, C, H, W) in [0, 1] to (z, mu, logvar), z = mu + exp(0.5 logvar) * eps.

        eps (N, D) is drawn from `seed` as in `sample` unless given; temperature scales it.
        """
        x = self._array("encode", "x", x, (None, *self.image_shape), 0.0, 1.0)
        eps = self._eps("encode", len(x), seed, eps, temperature)
        parts = [self._encoder.run(None, {"x": x[i:i + CHUNK], "eps": eps[i:i + CHUNK]})
                 for i in range(0, len(x), CHUNK)]
        return Encoding(*(np.concatenate([p[k] for p in parts]) for k in range(3)))

    def reconstruct(self, x, *, sampled: bool = False, seed: int | None = None) -> np.ndarray:
        """Decode the encoding of x: from mu (default), or from a sampled z when `sampled` (seeded)."""
        if not sampled and seed is not None:
            raise EdgeVAEError("reconstruct: seed only applies with sampled=True")
        if sampled:
            return self.decode(self.encode(x, seed=seed).z)
        return self.decode(self.encode_mean(x))

    def _point(self, what: str, value) -> np.ndarray:
        """A latent (D,) from a latent vector, or from one image (C, H, W) via the encoder's mean."""
        a = np.asarray(value)
        if a.shape in ((self.latent_dim,), (1, self.latent_dim)):
            return self._array(what, "latent", a.reshape(1, -1), (1, self.latent_dim))[0]
        if a.shape in (self.image_shape, (1, *self.image_shape)):
            return self.encode_mean(a.reshape(1, *self.image_shape))[0]
        raise EdgeVAEError(f"{what}: expected a latent of shape ({self.latent_dim},) or an image of shape "
                           f"{self.image_shape}, got {a.shape}")

    def encode_mean(self, x) -> np.ndarray:
        """The encoder's mean mu (N, D) for images x (N, C, H, W): the deterministic encoding."""
        return self.encode(x, seed=0, temperature=0.0).mu

    def interpolate(self, a, b, steps: int = 8, method: str = "lerp") -> np.ndarray:
        """Decode `steps` points from a to b (ends included): images (steps, C, H, W).

        a and b are each a latent (D,) or an image (C, H, W), which is encoded to its mean.
        method "lerp" is a straight line; "slerp" follows the sphere, see runtime._latent.interpolate.
        """
        path = _latent.interpolate(self._point("interpolate", a), self._point("interpolate", b), steps, method)
        return self.decode(path)

    def traverse(self, dim: int, values=None, z=None, steps: int = 9, span: float = 3.0) -> np.ndarray:
        """Decode z with latent dimension `dim` swept over `values` (default linspace(-span, span, steps)).

        z (D,) defaults to the prior mean, zeros. Returns images (len(values), C, H, W).
        """
        base = np.zeros(self.latent_dim, np.float32) if z is None else self._point("traverse", z)
        values = np.linspace(-span, span, steps) if values is None else np.asarray(values, np.float64).ravel()
        if not np.isfinite(values).all() or values.size == 0:
            raise EdgeVAEError(f"traverse: values must be finite and non-empty, got {values.size} values")
        return self.decode(_latent.traverse(base, dim, values))

    def manifold(self, steps: int = 20) -> np.ndarray:
        """For a 2-D latent, decode a steps x steps grid of normal quantiles: images (steps^2, C, H, W), row-major."""
        if self.latent_dim != 2:
            raise EdgeVAEError(f"manifold: needs a 2-D latent, this model's latent_dim is {self.latent_dim}")
        return self.decode(_latent.manifold(steps))


def load(path: str | os.PathLike, *, threads: int | None = None, spinning: bool = False,
         variant: str = "fp32") -> Model:
    """Load an export directory, verifying each graph's sha256 and that both come from one export.

    variant: "fp32" (default), or "int8" / "fp16" when the export wrote them (`python -m export --int8`).
    threads: onnxruntime intra-op threads (None: one per physical core). spinning: let idle worker
    threads spin for lower latency at the cost of CPU (off by default, right for desktop apps).
    Raises EdgeVAEError for a missing, tampered or mismatched file.
    """
    return Model(path, threads=threads, spinning=spinning, variant=variant)
