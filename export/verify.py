"""Checks an export must pass before it is written: onnx.checker, no random op, onnxruntime == torch.

Parity bound, 1e-5 max |difference|: both sides compute in float32 (unit roundoff 6e-8), but
onnxruntime's MLAS and PyTorch's CPU GEMMs sum in different orders, so a dot product of a few
hundred O(1) terms differs by a few 1e-7 at most, and exp/sigmoid keep that scale. 1e-5 leaves
~10x headroom over what we measure while any real defect (a wrong op, noise frozen into a constant,
a swapped head) shows up as differences of 1e-2 or more.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from runtime import spec as S
from runtime.noise import standard_normal

from . import quality, variants
from .graphs import op_types

PARITY_TOLERANCE = 1e-5
PARITY_BATCH_SIZES = (1, 7, 64)
PARITY_SEED = 20_240_611  # eps for the parity check: fixed, so an export is reproducible


class ExportCheckError(RuntimeError):
    """An exported graph failed a check; the export is not written."""


def check_graph(model: onnx.ModelProto, name: str) -> set[str]:
    """onnx.checker (full, with shape inference), no random op, only allowed ops; returns the op types."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportCheckError(f"{name}: onnx.checker failed: {str(e).splitlines()[0]}") from None
    ops = op_types(model)
    random = sorted(ops & S.RANDOM_OPS)
    if random:
        raise ExportCheckError(f"{name}: contains random op(s) {', '.join(random)}; noise must come in as eps")
    unknown = sorted(ops - S.ALLOWED_OPS)
    if unknown:
        raise ExportCheckError(f"{name}: uses op(s) {', '.join(unknown)} outside the allow-list "
                               f"(runtime/spec.py ALLOWED_OPS)")
    return ops


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


def parity(vae: torch.nn.Module, encoder: onnx.ModelProto, decoder: onnx.ModelProto, reference_x: torch.Tensor,
           batch_sizes=PARITY_BATCH_SIZES) -> dict:
    """Max |onnxruntime - torch| of z, mu, logvar and x_hat over the batch sizes, same x and eps.

    reference_x: uint8 (M, C, H, W) real test images, repeated when a batch needs more than M.
    The decoder gets the torch z on both sides, so its difference is the decoder's own.
    """
    enc, dec = session(encoder), session(decoder)
    worst = {name: 0.0 for name in (*S.ENCODER_OUTPUTS, *S.DECODER_OUTPUTS)}
    vae.eval()
    for n in batch_sizes:
        idx = torch.arange(n) % len(reference_x)
        x = reference_x[idx].float() / 255.0  # (n, C, H, W)
        eps = standard_normal(PARITY_SEED + n, (n, vae.latent_dim))
        with torch.no_grad():
            mu, logvar = vae.encoder(x)
            z = vae.reparameterize(mu, logvar, torch.from_numpy(eps))
            x_hat = vae.decode(z)
        got = enc.run(None, {"x": x.numpy(), "eps": eps})
        got_x_hat = dec.run(None, {"z": z.numpy()})[0]
        for name, want, have in zip(worst, (z, mu, logvar, x_hat), (*got, got_x_hat)):
            if have.shape != tuple(want.shape):
                raise ExportCheckError(f"{name}: onnxruntime shape {have.shape} != torch {tuple(want.shape)} at batch {n}")
            worst[name] = max(worst[name], float(np.max(np.abs(have - want.numpy()))))
    broken = {k: v for k, v in worst.items() if not v <= PARITY_TOLERANCE}
    if broken:
        detail = ", ".join(f"{k} {v:.2e}" for k, v in broken.items())
        raise ExportCheckError(f"parity with PyTorch broken (bound {PARITY_TOLERANCE:g}): max |diff| {detail}")
    return worst


ELBO_TOLERANCE = 0.01  # nats per image: float32 sums over ~1e3 pixels, then float64; see tests/test_parity.py


def elbo_parity(vae: torch.nn.Module, encoder: onnx.ModelProto, decoder: onnx.ModelProto,
                reference_x: torch.Tensor, likelihood: str) -> dict:
    """Mean test negative ELBO on the reference images with fixed eps: torch versus the ONNX graphs."""
    from train.elbo import negative_elbo

    x = reference_x.float() / 255.0
    eps = standard_normal(PARITY_SEED, (len(x), vae.latent_dim))
    with torch.no_grad():
        _, recon, kl = negative_elbo(vae, x, torch.from_numpy(eps))
    want = float((recon.double() + kl.double()).mean())
    got = float(quality.neg_elbo(*quality.graph_functions(session(encoder), session(decoder)), x.numpy(), eps,
                                 likelihood).mean())
    if not abs(got - want) <= ELBO_TOLERANCE:
        raise ExportCheckError(f"ELBO through the graphs {got:.4f} != torch {want:.4f} nats/image "
                               f"(bound {ELBO_TOLERANCE})")
    return {"neg_elbo_torch": want, "neg_elbo_onnx": got, "images": len(x), "tolerance": ELBO_TOLERANCE}


def variant_quality(variant: str, fp32: tuple, candidate: tuple, reference_x: torch.Tensor, latent_dim: int,
                    likelihood: str) -> dict:
    """A variant's PSNR of x_hat and relative change of the negative ELBO against fp32, and its gate."""
    gate = variants.GATES[variant]
    ref = quality.graph_functions(*(session(m) for m in fp32))
    new = quality.graph_functions(*(session(m) for m in candidate))
    z = standard_normal(PARITY_SEED, (256, latent_dim))
    psnr = quality.psnr(ref[1](z), new[1](z))
    x = (reference_x.float() / 255.0).numpy()
    eps = standard_normal(PARITY_SEED, (len(x), latent_dim))
    base = float(quality.neg_elbo(*ref, x, eps, likelihood).mean())
    got = float(quality.neg_elbo(*new, x, eps, likelihood).mean())
    change = abs(got - base) / abs(base)
    return {"psnr_db": round(psnr, 3), "neg_elbo_fp32": base, "neg_elbo": got, "neg_elbo_change": change,
            "gate": gate, "passed": bool(psnr >= gate["min_psnr_db"] and change <= gate["max_neg_elbo_change"])}
