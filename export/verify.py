"""`edgevae verify RUN_DIR EXPORT_DIR`: prove the files on disk compute what the checkpoint does.

For every variant in the export, the graphs run through the runtime (the files as written, hashes
checked) against PyTorch with identical x and eps at several batch sizes, and through onnx's
reference evaluator (an independent executor) against onnxruntime. Bounds, and why (README "Parity"):
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

import edgevae
from edgevae.noise import standard_normal
from edgevae.train.elbo import latent_shape_of

from . import gates, quality, variants
from .build import load_run
from .gates import ELBO_TOLERANCE, PARITY_SEED, PARITY_TOLERANCE

BATCH_SIZES = (1, 7, 64, 256)
# (metric, bound) per variant and output; max_abs and rms are in output units, psnr_db in dB.
TOLERANCES = {
    # float32 both sides; GEMM summation order differs (~1e-6 measured); a real defect is >= 1e-2.
    "fp32": {name: ("max_abs", PARITY_TOLERANCE) for name in ("z", "mu", "logvar", "x_hat")},
    # weights rounded to float16 (relative 2^-11 = 4.9e-4) through 2-3 layers: ~1e-3 measured.
    "fp16": {name: ("max_abs", 5e-3) for name in ("z", "mu", "logvar", "x_hat")},
    # 8-bit weights and per-batch 8-bit activations: ~0.02 RMS on latents of scale ~1 measured;
    # images are judged like the export gate, by PSNR.
    "int8": {"z": ("rms", 0.05), "mu": ("rms", 0.05), "logvar": ("rms", 0.05), "x_hat": ("psnr_db", 30.0)},
}
REFERENCE_TOLERANCE = 1e-5  # onnx.reference (numpy) vs onnxruntime (MLAS): float32, different summation order
PIXEL_LEVELS = {"fp32": 1, "fp16": 2, "int8": None}  # max |uint8 difference| of sample pixels vs torch; int8: reported


@dataclass
class Row:
    variant: str
    check: str
    metric: str
    measured: float
    bound: float | None  # None: reported, not bounded

    @property
    def ok(self) -> bool:
        if self.bound is None:
            return True
        return self.measured >= self.bound if self.metric == "psnr_db" else self.measured <= self.bound


def _metric(metric: str, got: np.ndarray, want: np.ndarray) -> float:
    d = got.astype(np.float64) - want.astype(np.float64)
    if metric == "max_abs":
        return float(np.max(np.abs(d)))
    if metric == "rms":
        return float(np.sqrt(np.mean(d**2)))
    return quality.psnr(want, got)


def verify_export(run_dir: str | Path, export_dir: str | Path, batch_sizes=BATCH_SIZES) -> list[Row]:
    """Every check for every variant of the export; a Row each, worst case over the batch sizes."""
    fp32 = edgevae.load(export_dir)
    exported_from = {"best.pt": "best", "checkpoint.pt": "last"}[fp32.spec["training"]["checkpoint"]]
    vae, ckpt = load_run(Path(run_dir), exported_from)
    if fp32.spec["latent_dim"] != vae.latent_dim or list(fp32.image_shape) != list(ckpt["image_shape"]) \
            or fp32.kind != vae.kind or (fp32.classes is not None) != vae.conditional:
        raise ValueError(f"{export_dir} does not come from {run_dir}: model kind, latent or image shape differ")
    models = {v: edgevae.load(export_dir, variant=v) for v in fp32.manifest["variants"]}
    worst: dict[tuple, float] = {}

    def keep(variant, check, metric, value):
        key = (variant, check, metric)
        if key not in worst or (value < worst[key] if metric == "psnr_db" else value > worst[key]):
            worst[key] = value

    for n in batch_sizes:
        inputs = gates.encoder_inputs(vae, ckpt, n, PARITY_SEED + n)
        want = gates.torch_run(vae, "encoder", inputs)
        want.update(gates.torch_run(vae, "decoder", gates.decoder_inputs(vae, want["z"], inputs)))
        sample_eps = standard_normal(PARITY_SEED + n, (n, *latent_shape_of(vae)))
        y = inputs.get("y")
        want_sample = gates.torch_run(vae, "decoder", gates.decoder_inputs(vae, sample_eps, inputs))["x_hat"]
        for variant, model in models.items():
            enc = model.encode(inputs["x"], eps=inputs.get("eps"), labels=y)
            got = {"z": enc.z, "mu": enc.mu, "logvar": enc.logvar, "x_hat": model.decode(want["z"], labels=y)}
            for name, (metric, _) in TOLERANCES[variant].items():
                if name in want:  # the autoencoder has no mu or logvar output
                    keep(variant, name, metric, _metric(metric, got[name], want[name]))
            sampled = model.sample(n, eps=sample_eps, labels=y) if model.prior else model.decode(sample_eps, labels=y)
            pixels = np.abs(edgevae.to_uint8(sampled).astype(int)
                            - edgevae.to_uint8(want_sample))
            keep(variant, "sample pixels (uint8)", "max_levels", float(pixels.max()))
            keep(variant, "sample pixels (uint8)", "fraction_differing", float((pixels > 0).mean()))

    rows = [Row(v, c, m, value, _bound(v, c, m)) for (v, c, m), value in worst.items()]
    elbo = gates.elbo_parity_torch(vae, ckpt)
    for variant, model in models.items():
        onnx_elbo = gates.graph_elbo(vae, *_model_functions(model), ckpt)
        if onnx_elbo is None:
            pass  # this likelihood's -log p(x|z) is not determined by the graphs (quality.NO_GRAPH_ELBO)
        elif variant == "fp32":
            rows.append(Row(variant, "-ELBO vs torch (nats/image)", "abs_diff", abs(onnx_elbo - elbo), ELBO_TOLERANCE))
        else:
            rows.append(Row(variant, "-ELBO vs torch", "relative_change", abs(onnx_elbo - elbo) / abs(elbo),
                            variants.GATES[variant]["max_neg_elbo_change"]))
        rows.append(Row(variant, "onnx.reference vs onnxruntime", "max_abs",
                        _reference_diff(vae, model, gates.encoder_inputs(vae, ckpt, 7, PARITY_SEED)),
                        REFERENCE_TOLERANCE))
    return rows


def _model_functions(model):
    """(encode, decode) over dicts of named arrays, through the runtime's public API."""
    def encode(inputs):
        enc = model.encode(inputs["x"], eps=inputs.get("eps"), labels=inputs.get("y"))
        return {"z": enc.z} if enc.logvar is None else enc._asdict()
    return encode, lambda inputs: model.decode(inputs["z"], labels=inputs.get("y"))


def _bound(variant: str, check: str, metric: str) -> float | None:
    if check in TOLERANCES[variant]:
        return TOLERANCES[variant][check][1]
    return PIXEL_LEVELS[variant] if metric == "max_levels" else None  # the fraction is reported, not bounded


def _reference_diff(vae, model, inputs: dict) -> float:
    """Max |onnx.reference.ReferenceEvaluator - onnxruntime| over both graphs of a variant."""
    files = model.manifest["variants"][model.variant]
    reference = {role: ReferenceEvaluator(onnx.load(model.path / files[role])) for role in ("encoder", "decoder")}
    want = gates.ort_run(reference["encoder"], vae, "encoder", inputs)
    dec_inputs = gates.decoder_inputs(vae, want["z"], inputs)
    want.update(gates.ort_run(reference["decoder"], vae, "decoder", dec_inputs))
    encode, decode = _model_functions(model)
    got = {**encode(inputs), "x_hat": decode(dec_inputs)}
    return float(max(np.abs(got[k] - want[k]).max() for k in want))


def format_table(rows: list[Row]) -> str:
    lines = [f"{'variant':7}  {'check':32}  {'metric':18}  {'measured':>10}  {'bound':>10}  ok", "-" * 90]
    for r in rows:
        bound = "-" if r.bound is None else f"{r.bound:.3g}"
        lines.append(f"{r.variant:7}  {r.check:32}  {r.metric:18}  {r.measured:10.3g}  {bound:>10}  "
                     f"{'yes' if r.ok else 'NO'}")
    return "\n".join(lines)
