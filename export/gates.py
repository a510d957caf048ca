"""The gates an export must pass before it is written: onnx.checker, allowed ops only, onnxruntime == torch,
and for a run of `edgevae train` the one table of bounds in export/bounds.py -- fp32 and every variant,
measured as `edgevae verify` measures it -- including the refusal of a collapsed model.

Parity bound, 1e-5 max |difference|: both sides compute in float32 (unit roundoff 6e-8), but
onnxruntime's MLAS and PyTorch's CPU kernels sum in different orders, so a dot product of a few
hundred O(1) terms differs by a few 1e-7, and exp/sigmoid keep that scale. 1e-5 leaves ~10x
headroom over what we measure while any real defect (a wrong op, noise frozen into a constant,
a swapped head) shows up as differences of 1e-2 or more. A collapsed model (a decoder that ignores
z) passes every parity bound, so it is checked on its own (bounds.COLLAPSE).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgevae import spec as S
from edgevae.noise import standard_normal

from . import bounds, quality
from .graphs import DecoderGraph, EncoderGraph, op_types

PARITY_TOLERANCE = bounds.BOUNDS["fp32"]["x_hat"][1]
PARITY_BATCH_SIZES = (1, 7, 64)  # every model family's parity (export/checks.py); EdgeVAE runs: bounds.BATCH_SIZES
PARITY_SEED = bounds.PARITY_SEED  # eps for the parity check: fixed, so an export is reproducible


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
              "eps": standard_normal(seed, (n, *vae.latent_shape))}
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
           batch_sizes=PARITY_BATCH_SIZES, tolerance: float = PARITY_TOLERANCE,
           relative: bool = True) -> tuple[dict, dict]:
    """Max |onnxruntime - torch| of every graph output over the batch sizes, same x, eps and y, and the scale
    it is judged at: max(1, max |torch|) over the batches. Float32 rounding is relative, so an output whose values
    reach 300 (a diverged latent) or one computed through a fitted prior's whitening L^-1 differs by more than
    one of unit scale; a real defect -- a wrong op, noise frozen into a constant -- is >= 1e-2 of the scale.
    relative=False (imported models, whose family bounds are absolute and measured so): the scale is 1.

    The decoder gets the torch z on both sides, so its difference is the decoder's own. `tolerance`
    is the model family's bound (export/adapters.py TOLERANCES; PARITY_TOLERANCE for EdgeVAE's own).
    Returns ({output: max |diff|}, {output: scale}); ExportCheckError if a diff is above tolerance x scale.
    """
    enc, dec = session(encoder), session(decoder)
    worst: dict[str, float] = {}
    scale: dict[str, float] = {}
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
            scale[name] = max(scale.get(name, 1.0), float(np.max(np.abs(value))) if relative else 1.0)
    check_parity(worst, scale, tolerance)
    return worst, scale


def check_parity(worst: dict, scale: dict, tolerance: float) -> None:
    """ExportCheckError naming every output whose max |diff| is above tolerance x its scale."""
    broken = {k: v for k, v in worst.items() if not v <= tolerance * scale.get(k, 1.0)}
    if broken:
        detail = ", ".join(f"{k} {v:.2e}" + (f" (max |torch| {scale[k]:.3g})" if scale.get(k, 1.0) > 1 else "")
                           for k, v in broken.items())
        relative = " x max(1, max |torch|)" if any(v > 1 for v in scale.values()) else ""
        raise ExportCheckError(f"parity with PyTorch broken (bound {tolerance:g}{relative}): max |diff| {detail}")


def reference_function(encoder: onnx.ModelProto, decoder: onnx.ModelProto, vae):
    """inputs -> {z, mu, logvar, x_hat of z} through onnx's reference evaluator (numpy): an independent executor."""
    from onnx.reference import ReferenceEvaluator

    from .reference_ops import OPS  # DequantizeLinear at opset 18: the int8 graphs with convolutions

    enc, dec = ReferenceEvaluator(encoder, new_ops=OPS), ReferenceEvaluator(decoder, new_ops=OPS)

    def run(inputs: dict) -> dict:
        out = ort_run(enc, vae, "encoder", inputs)
        out.update(ort_run(dec, vae, "decoder", decoder_inputs(vae, out["z"], inputs)))
        return out
    return run


def check_bounds(vae, ckpt: dict, encoder: onnx.ModelProto, decoder: onnx.ModelProto) -> list:
    """A run's fp32 graphs against its row of the bounds table (bounds.BOUNDS["fp32"] at bounds.BATCH_SIZES) and
    not collapsed; returns the rows. Raises ExportCheckError naming what broke, and for collapse what to try."""
    rows = bounds.measure("fp32", vae, ckpt, *graph_functions(vae, session(encoder), session(decoder)),
                          reference=reference_function(encoder, decoder, vae), torch_elbo=elbo_parity_torch(vae, ckpt))
    collapsed = [r for r in rows if r.check in bounds.COLLAPSE and not r.ok]
    if collapsed:
        from edgevae.train.diagnostics import COLLAPSE_ADVICE

        raise ExportCheckError(
            "the model has collapsed: " + "; ".join(f"{r.check} {r.measured:.3g} (needs >= {r.bound:g})"
                                                    for r in collapsed)
            + f" -- its decoder ignores z, so every sample is the same image. Retrain: {COLLAPSE_ADVICE} "
            "(`edgevae evaluate` shows the KL of every unit)")
    broken = [r for r in rows if not r.ok]
    if broken:
        detail = ", ".join(f"{r.check} {r.metric} {r.measured:.2e} (bound {r.bound:g})" for r in broken)
        raise ExportCheckError(f"fp32 outside its bounds (export/bounds.py): {detail}")
    return rows


def likelihood_params(vae) -> dict:
    """What scoring -log p(x|z) needs beyond x_hat (train/likelihood.py export_params): the spec's likelihood_params."""
    return vae.likelihood.export_params()


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
    eps = torch.from_numpy(standard_normal(PARITY_SEED, (len(inputs["x"]), *vae.latent_shape)))
    with torch.no_grad():
        _, recon, kl = negative_elbo(vae, torch.from_numpy(inputs["x"]), eps, y=y)
    return float((recon.double() + kl.double()).mean())


def elbo_parity(vae, ckpt: dict, encoder: onnx.ModelProto, decoder: onnx.ModelProto) -> dict:
    """Mean test negative ELBO on the reference images with fixed eps: torch versus the ONNX graphs (a record for
    the spec; check_bounds() bounds the difference)."""
    want = elbo_parity_torch(vae, ckpt)
    got = graph_elbo(vae, *graph_functions(vae, session(encoder), session(decoder)), ckpt)
    dims = math.prod(vae.image_shape)
    result = {"neg_elbo_torch": want, "neg_elbo_onnx": got, "images": len(ckpt["reference_x"]),
              "tolerance_bits_per_dim": bounds.BOUNDS["fp32"][bounds.ELBO][1],
              "diff_bits_per_dim": None if got is None else abs(got - want) / (dims * math.log(2))}
    if got is None:
        return {**result, "note": quality.NO_GRAPH_ELBO[vae.likelihood.name]}
    return result


def variant_quality(variant: str, vae, ckpt: dict, fp32: tuple, candidate: tuple) -> dict:
    """A variant's rows of the bounds table (bounds.measure, as verify measures them) and its verdict."""
    rows = bounds.measure(variant, vae, ckpt, *graph_functions(vae, *(session(m) for m in candidate)),
                          reference=reference_function(*candidate, vae), torch_elbo=elbo_parity_torch(vae, ckpt))
    return bounds.summary(rows)


def describe(q: dict) -> str:
    """One line for a variant's quality record: the headline numbers, then any broken bound."""
    return ", ".join(f"{c['check']} {c['metric']} {c['measured']:.3g}" + ("" if c["ok"] else f" (bound {c['bound']:g})")
                     for c in q["checks"] if c["check"] in bounds.OUTPUTS or c["check"] == bounds.ELBO or not c["ok"])


def load_export(directory, **kwargs):
    """The export as the runtime loads it, with load's bounds on one run lifted: export and verify check
    models of any size whole (an app's `edgevae.load` keeps the defaults and decodes large ones in tiles)."""
    import edgevae

    return edgevae.load(directory, max_run_bytes=1 << 40, max_image_macs=10**15, **kwargs)
