"""The gates an export must pass before it is written: onnx.checker, allowed ops only, onnxruntime == torch.

Parity bound, 1e-5 max |difference|: both sides compute in float32 (unit roundoff 6e-8), but
onnxruntime's MLAS and PyTorch's CPU kernels sum in different orders, so a dot product of a few
hundred O(1) terms differs by a few 1e-7, and exp/sigmoid keep that scale. 1e-5 leaves ~10x
headroom over what we measure while any real defect (a wrong op, noise frozen into a constant,
a swapped head) shows up as differences of 1e-2 or more.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgevae import spec as S
from edgevae.noise import standard_normal
from edgevae.train.elbo import latent_shape_of

from . import quality, variants
from .graphs import DecoderGraph, EncoderGraph, op_types

PARITY_TOLERANCE = 1e-5
PARITY_BATCH_SIZES = (1, 7, 64)
PARITY_SEED = 20_240_611  # eps for the parity check: fixed, so an export is reproducible
ELBO_TOLERANCE = 0.01  # nats per image: float32 sums over ~1e3 pixels, then float64; see tests/test_parity.py


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


def signature(vae, role: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return S.signature(role, vae.kind, vae.conditional)


def encoder_inputs(vae, ckpt: dict, n: int, seed: int) -> dict[str, np.ndarray]:
    """x (real test images from the checkpoint, repeated when n exceeds them), eps and y for n images."""
    idx = torch.arange(n) % len(ckpt["reference_x"])
    inputs = {"x": (ckpt["reference_x"][idx].float() / 255.0).numpy(),
              "eps": standard_normal(seed, (n, *latent_shape_of(vae)))}
    if vae.conditional:
        inputs["y"] = ckpt["reference_y"][idx].numpy().astype(np.int64)
    return {k: v for k, v in inputs.items() if k in signature(vae, "encoder")[0]}


def torch_run(vae, role: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The exported wrapper module run by PyTorch: the source of truth, output by output."""
    names_in, names_out = signature(vae, role)
    wrapper = (EncoderGraph if role == "encoder" else DecoderGraph)(vae).eval()
    with torch.no_grad():
        out = wrapper(*(torch.from_numpy(inputs[n]) for n in names_in))
    return dict(zip(names_out, (o.numpy() for o in (out if isinstance(out, tuple) else (out,)))))


def ort_run(sess, vae, role: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names_in, names_out = signature(vae, role)
    return dict(zip(names_out, sess.run(None, {n: inputs[n] for n in names_in})))


def decoder_inputs(vae, z: np.ndarray, enc_inputs: dict) -> dict[str, np.ndarray]:
    return {"z": z, **({"y": enc_inputs["y"]} if "y" in enc_inputs else {})}


def parity(vae, ckpt: dict, encoder: onnx.ModelProto, decoder: onnx.ModelProto,
           batch_sizes=PARITY_BATCH_SIZES) -> dict:
    """Max |onnxruntime - torch| of every graph output over the batch sizes, same x, eps and y.

    The decoder gets the torch z on both sides, so its difference is the decoder's own.
    """
    enc, dec = session(encoder), session(decoder)
    worst: dict[str, float] = {}
    for n in batch_sizes:
        inputs = encoder_inputs(vae, ckpt, n, PARITY_SEED + n)
        want = torch_run(vae, "encoder", inputs)
        dec_in = decoder_inputs(vae, want["z"], inputs)
        want.update(torch_run(vae, "decoder", dec_in))
        got = {**ort_run(enc, vae, "encoder", inputs), **ort_run(dec, vae, "decoder", dec_in)}
        for name, value in want.items():
            if got[name].shape != value.shape:
                raise ExportCheckError(f"{name}: onnxruntime shape {got[name].shape} != torch {value.shape} "
                                       f"at batch {n}")
            worst[name] = max(worst.get(name, 0.0), float(np.max(np.abs(got[name] - value))))
    broken = {k: v for k, v in worst.items() if not v <= PARITY_TOLERANCE}
    if broken:
        detail = ", ".join(f"{k} {v:.2e}" for k, v in broken.items())
        raise ExportCheckError(f"parity with PyTorch broken (bound {PARITY_TOLERANCE:g}): max |diff| {detail}")
    return worst


def likelihood_params(vae) -> dict:
    """What the ONNX-side likelihood needs beyond x_hat: the Gaussian's log sigma per channel."""
    if vae.likelihood.name == "gaussian":
        return {"log_sigma": vae.likelihood.log_sigma.detach().flatten().tolist()}
    return {}


def graph_elbo(vae, encode, decode, ckpt: dict) -> float | None:
    """Mean negative ELBO through (encode, decode) on the checkpoint's reference images with fixed eps."""
    inputs = encoder_inputs(vae, ckpt, len(ckpt["reference_x"]), PARITY_SEED)
    per_image = quality.neg_elbo(encode, decode, inputs, vae.likelihood.name, likelihood_params(vae))
    return None if per_image is None else float(per_image.mean())


def graph_functions(vae, enc_sess, dec_sess):
    """(encode, decode) from dicts of named inputs to dicts of named outputs, through two sessions."""
    return (lambda inputs: ort_run(enc_sess, vae, "encoder", inputs),
            lambda inputs: ort_run(dec_sess, vae, "decoder", inputs)["x_hat"])


def elbo_parity_torch(vae, ckpt: dict) -> float:
    """Mean test negative ELBO in PyTorch on the reference images, with the eps graph_elbo uses."""
    from edgevae.train.elbo import negative_elbo

    inputs = encoder_inputs(vae, ckpt, len(ckpt["reference_x"]), PARITY_SEED)
    y = torch.from_numpy(inputs["y"]) if "y" in inputs else None
    eps = torch.from_numpy(standard_normal(PARITY_SEED, (len(inputs["x"]), *latent_shape_of(vae))))
    with torch.no_grad():
        _, recon, kl = negative_elbo(vae, torch.from_numpy(inputs["x"]), eps, y=y)
    return float((recon.double() + kl.double()).mean())


def elbo_parity(vae, ckpt: dict, encoder: onnx.ModelProto, decoder: onnx.ModelProto) -> dict:
    """Mean test negative ELBO on the reference images with fixed eps: torch versus the ONNX graphs."""
    want = elbo_parity_torch(vae, ckpt)
    got = graph_elbo(vae, *graph_functions(vae, session(encoder), session(decoder)), ckpt)
    result = {"neg_elbo_torch": want, "neg_elbo_onnx": got, "images": len(ckpt["reference_x"]),
              "tolerance": ELBO_TOLERANCE}
    if got is None:
        return {**result, "note": quality.NO_GRAPH_ELBO[vae.likelihood.name]}
    if not abs(got - want) <= ELBO_TOLERANCE:
        raise ExportCheckError(f"ELBO through the graphs {got:.4f} != torch {want:.4f} nats/image "
                               f"(bound {ELBO_TOLERANCE})")
    return result


def variant_quality(variant: str, vae, ckpt: dict, fp32: tuple, candidate: tuple) -> dict:
    """A variant's PSNR of x_hat and relative change of the negative ELBO against fp32, and its gate."""
    gate = variants.GATES[variant]
    ref = graph_functions(vae, *(session(m) for m in fp32))
    new = graph_functions(vae, *(session(m) for m in candidate))
    z = {"z": standard_normal(PARITY_SEED, (256, *latent_shape_of(vae)))}
    if vae.conditional:
        z["y"] = np.arange(256, dtype=np.int64) % vae.num_classes
    psnr = quality.psnr(ref[1](z), new[1](z))
    base, got = graph_elbo(vae, *ref, ckpt), graph_elbo(vae, *new, ckpt)
    change = None if base is None else abs(got - base) / abs(base)
    passed = psnr >= gate["min_psnr_db"] and (change is None or change <= gate["max_neg_elbo_change"])
    return {"psnr_db": round(psnr, 3), "neg_elbo_fp32": base, "neg_elbo": got, "neg_elbo_change": change,
            "gate": gate, "passed": bool(passed)}
