"""`export_vae`: any PyTorch VAE to two verified ONNX graphs, from Python.

    from edgevae.export import export_vae
    export_vae(my_vae, (3, 64, 64), "exports/mine", native_range=(-1, 1))     # encode(x)->(mu, logvar), decode(z)->x
    export_vae(autoencoder_kl, None, "exports/sd-vae")                        # diffusers' AutoencoderKL, as it is

The model keeps the protocol: `encode(x) -> (mu, logvar)` and `decode(z) -> x`, x (N, C, H, W) in the
model's native range, mu and logvar (N, D) or (N, C, h, w). The graphs take and give pixels in [0, 1]
and draw no noise: `eps` is an input of the encoder. Prints what it checked and wrote, like the CLI.
"""
from __future__ import annotations

import os
from pathlib import Path

from edgevae import spec as S

from . import adapters
from .build import write_export


def as_source(model, image_shape=None, *, native_range=(0.0, 1.0), prior: str | None = S.PRIOR,
              prior_note: str | None = None, tileable: bool | None = None) -> adapters.Source:
    """A Source for the model: itself if it is one, diffusers' AutoencoderKL by its API, else the protocol."""
    if isinstance(model, adapters.Source):
        return model
    if type(model).__name__ == "AutoencoderKL" and type(model).__module__.startswith("diffusers"):
        from .importers import DIFFUSERS_PRIOR_NOTE, DiffusersSource

        model.disable_tiling()
        side = model.config.sample_size if isinstance(model.config.sample_size, int) else model.config.sample_size[0]
        clean = {k: v for k, v in model.config.items() if not k.startswith("_")}
        return DiffusersSource(model, image_shape or (model.config.in_channels, side, side), native_range=(-1.0, 1.0),
                               prior=None, prior_note=DIFFUSERS_PRIOR_NOTE,
                               latent_scaling={"scaling_factor": float(model.config.scaling_factor),
                                               "shift_factor": float(model.config.shift_factor or 0.0)},
                               info={"class": "AutoencoderKL", "config_sha256": adapters.config_hash(clean)})
    if image_shape is None:
        raise adapters.SourceError("image_shape (C, H, W) is needed for a module")
    return adapters.from_module(model, image_shape, native_range=native_range, prior=prior, prior_note=prior_note,
                                tileable=tileable)


def export_vae(model, image_shape, out: str | os.PathLike, *, native_range=(0.0, 1.0), prior: str | None = S.PRIOR,
               prior_note: str | None = None, tileable: bool | None = None, tolerance: float | None = None,
               force: bool = False, log=print) -> Path:
    """Export `model` to `out` (encoder.onnx, decoder.onnx, manifest.json) after every check; returns `out`.

    native_range: the model's pixel range, (0, 1) or (-1, 1) (or any (lo, hi)); the affine maps are folded
    into the graphs. prior: "standard_normal" when decoding z ~ N(0, I) is meaningful (trained with the KL
    to N(0, I)), else None with a prior_note saying why. tileable: spatial dims dynamic for tiled decoding
    (default: whenever the latent is spatial and its sides divide the image's). tolerance: the parity
    bound (default: the family's, adapters.TOLERANCES). Raises adapters.SourceError for a model that
    does not keep the protocol, gates.ExportCheckError for a failed check; writes nothing then.
    """
    if prior is None and not prior_note:
        prior_note = "the exporter was told decoding z ~ N(0, I) is not meaningful for this model"
    source = as_source(model, image_shape, native_range=native_range, prior=prior, prior_note=prior_note,
                       tileable=tileable)
    describe(source, log)
    return write_export(source, Path(out), None, force=force, tolerance=tolerance, log=log)


def describe(source: adapters.Source, log=print) -> None:
    """One line saying what is being exported: the family, shapes, range, prior and tiling."""
    c, h, w = source.image_shape
    latent = "x".join(map(str, source.latent_shape))
    log(f"exporting {source.info.get('class', source.family)} ({source.family}): image {c}x{h}x{w}, latent {latent}, "
        f"native range [{source.native_range[0]:g}, {source.native_range[1]:g}]"
        + ("" if source.native_range == (0.0, 1.0) else " folded to [0, 1]")
        + (", prior N(0, I)" if source.prior else ", no prior")
        + (f", tileable ({source.latent_scale} px per latent cell)" if source.tileable else ""))


__all__ = ["as_source", "describe", "export_vae"]
