"""Any PyTorch VAE in the contract's terms: `Source`, and the adapters that make one from a model.

    source = adapters.from_module(my_vae, image_shape=(3, 64, 64), native_range=(-1, 1))
    source = adapters.from_edgevae(vae, ckpt)                # a run written by `edgevae train`

The protocol a model keeps (README "Export your own VAE"): `encode(x) -> (mu, logvar)` and
`decode(z) -> x`, with x in the model's native range (N, C, H, W) and mu, logvar, z (N, *latent_shape).
A `Source` folds the affine maps between [0, 1] and that range into encode and decode, so every graph
boundary sees pixels in [0, 1]. It calls the model's own forward methods: nothing is patched, and the
export wrappers (export/graphs.py) add only the reparameterization and the clamp of x_hat.

Adapters for other libraries' models (AntixK/PyTorch-VAE, diffusers, pythae) live in export/importers.py.
"""
from __future__ import annotations

import hashlib
import json
import math

import torch
from torch import nn

from edgevae import spec as S

from .bounds import BOUNDS

# max |onnxruntime - torch| bound per model family, and why (README "Export your own VAE" lists them).
TOLERANCES = {
    # EdgeVAE's own runs: the first check of every output, at the bounds table's fp32 x_hat bound (export/bounds.py says
    # why); the table then holds the latents to its tighter 1e-5 x max(1, max |torch|)
    "edgevae": BOUNDS["fp32"]["x_hat"][1],
    # pythae's default nets are MLPs like EdgeVAE's: ~1e-6 measured
    "pythae": 1e-5,
    # unknown layers of any depth; a user module's own bound is a flag (--tolerance)
    "module": 1e-4,
    # five stride-2 conv + BatchNorm layers with LeakyReLU, Tanh out: ~2e-6 measured
    "antixk": 1e-4,
    # deep conv stacks with GroupNorm and softmax attention: summation order differs across ~30 layers
    # (the 32x32 test model ~3e-6; Stable Diffusion's VAE configuration, random weights, 9.3e-5 measured on z)
    "diffusers": 5e-4,
}


class SourceError(ValueError):
    """The model cannot be exported: it does not keep the protocol, or its shapes do not fit the contract."""


class Source(nn.Module):
    """A model as the two graphs see it: encode(x in [0, 1][, y]) -> (mu, logvar), decode(z[, y]) -> x in [0, 1].

    Subclasses override `native_encode` / `native_decode` to call a library's own methods. Attributes the
    export code reads: kind ("vae" | "ae"), conditional, num_classes, image_shape, latent_shape, latent_dim,
    native_range, prior, prior_note, latent_scaling, tileable, latent_scale, family, info (spec "source").
    """

    family = "module"

    def __init__(self, net: nn.Module, image_shape, *, native_range=(0.0, 1.0), prior: str | None = S.PRIOR,
                 prior_note: str | None = None, latent_scaling: dict | None = None, info: dict | None = None,
                 tileable: bool | None = None, kind: str = "vae", num_classes: int = 0):
        super().__init__()
        self.net = net.eval()
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3 or self.image_shape[0] not in S.IMAGE_MODES:
            raise SourceError(f"image shape must be C,H,W with C in {sorted(S.IMAGE_MODES)}, got {image_shape}")
        lo, hi = (float(v) for v in native_range)
        if not lo < hi:
            raise SourceError(f"native range must be (lo, hi) with lo < hi, got {native_range}")
        self.native_range = (lo, hi)
        self.kind, self.num_classes, self.conditional = kind, num_classes, num_classes > 0
        self.prior = prior if kind == "vae" else None
        self.prior_note = prior_note if self.prior is None else None
        self.latent_scaling = latent_scaling
        self.info = {"kind": self.family, "class": type(net).__name__, **(info or {})}  # spec "source": no paths
        self.latent_shape = self._probe()
        self.latent_dim = math.prod(self.latent_shape)
        scale = self.image_shape[1] // self.latent_shape[-1] if len(self.latent_shape) == 3 else 0
        fits = (len(self.latent_shape) == 3 and scale >= 1 and self.latent_shape[1] * scale == self.image_shape[1]
                and self.latent_shape[2] * scale == self.image_shape[2])
        if tileable and not fits:
            raise SourceError(f"tiling needs a spatial latent whose sides divide the image's: latent "
                              f"{self.latent_shape}, image {self.image_shape}")
        self.tileable = fits if tileable is None else bool(tileable)
        self.latent_scale = scale if self.tileable else None

    # -- what subclasses override: the model's own calls, in its native range --------------------
    def native_encode(self, x: torch.Tensor, y: torch.Tensor | None = None):
        out = self.net.encode(x)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise SourceError(f"encode(x) must return (mu, logvar), got {type(out).__name__}"
                              + (f" of {len(out)}" if isinstance(out, (tuple, list)) else ""))
        return out[0], out[1]

    def native_decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net.decode(z)

    # -- the contract's side ------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """(mu, logvar) for x in [0, 1]; the AE's logvar is None."""
        lo, hi = self.native_range
        return self.native_encode(x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo, y)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's image mapped to [0, 1] (not clamped: the graph wrapper clamps)."""
        lo, hi = self.native_range
        x = self.native_decode(z, y)
        return x if (lo, hi) == (0.0, 1.0) else (x - lo) / (hi - lo)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor | None, eps: torch.Tensor) -> torch.Tensor:
        """z = mu + exp(0.5 * logvar) * eps (mu itself for the AE)."""
        return mu if logvar is None else mu + torch.exp(0.5 * logvar) * eps

    def _probe(self) -> tuple[int, ...]:
        """latent_shape from one encode and decode of two grey images; SourceError if the shapes disagree."""
        x = torch.full((2, *self.image_shape), 0.5)
        y = torch.zeros(2, dtype=torch.long) if self.conditional else None
        try:
            with torch.no_grad():
                mu, logvar = self.encode(x, y)
                x_hat = self.decode(mu, y)
        except SourceError:
            raise
        except Exception as e:  # whatever the model raises for a shape it cannot take
            raise SourceError(f"the model failed on images of shape (2, {', '.join(map(str, self.image_shape))}): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        for name, t in (("mu", mu), ("logvar", logvar)):
            if t is None and name == "logvar" and self.kind == "ae":
                continue
            if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.dim() not in (2, 4) or len(t) != 2:
                raise SourceError(f"encode: {name} must be a float32 tensor (N, D) or (N, C, h, w), got "
                                  f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
        if logvar is not None and logvar.shape != mu.shape:
            raise SourceError(f"encode: logvar {tuple(logvar.shape)} must have mu's shape {tuple(mu.shape)}")
        if not isinstance(x_hat, torch.Tensor) or tuple(x_hat.shape) != (2, *self.image_shape):
            raise SourceError(f"decode(z) must return images (N, {', '.join(map(str, self.image_shape))}), got "
                              f"{tuple(getattr(x_hat, 'shape', ()))}")
        shape = tuple(mu.shape[1:])
        if math.prod(shape) > S.MAX_LATENT:
            raise SourceError(f"latent {shape} has more than {S.MAX_LATENT} values")
        return shape


class EdgeVAESource(Source):
    """A model trained by `edgevae train` (train/model.py), with its likelihood for the ELBO checks."""

    family = "edgevae"

    def __init__(self, vae: nn.Module):
        super().__init__(vae, vae.image_shape, kind=vae.kind, num_classes=vae.num_classes, tileable=False)

    # the trained model's parts, read by export/gates.py's ELBO checks and by tests (properties: not re-registered)
    @property
    def encoder(self):
        return self.net.encoder

    @property
    def decoder(self):
        return self.net.decoder

    @property
    def likelihood(self):
        return self.net.likelihood

    def native_encode(self, x, y=None):
        return self.net.encoder(x, y)

    def native_decode(self, z, y=None):
        return self.net.decode(z, y)

    def forward(self, x, eps, y=None):  # train/elbo.py's negative_elbo calls model(x, eps, y) and model.nll
        return self.net(x, eps, y)

    def nll(self, logits, x):
        return self.net.nll(logits, x)


def from_edgevae(vae: nn.Module) -> EdgeVAESource:
    return EdgeVAESource(vae)


def from_module(model: nn.Module, image_shape, *, native_range=(0.0, 1.0), prior: str | None = S.PRIOR,
                prior_note: str | None = None, info: dict | None = None, tileable: bool | None = None) -> Source:
    """Your own nn.Module keeping the protocol: encode(x) -> (mu, logvar), decode(z) -> x in native_range."""
    for method in ("encode", "decode"):
        if not callable(getattr(model, method, None)):
            raise SourceError(f"{type(model).__name__} has no {method}() method; the protocol is "
                              f"encode(x) -> (mu, logvar) and decode(z) -> x")
    return Source(model, image_shape, native_range=native_range, prior=prior, prior_note=prior_note,
                  info={"class": type(model).__name__, **(info or {})}, tileable=tileable)


def config_hash(config: dict) -> str:
    """sha256 of a model config as canonical JSON: identifies an architecture without a path."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
