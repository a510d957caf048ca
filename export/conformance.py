"""`python -m export verify RUN_DIR EXPORT_DIR`: prove the files on disk compute what the checkpoint does.

For every variant in the export, the graphs run through the runtime (the files as written, hashes
checked) against PyTorch with identical x and eps at several batch sizes, and through onnx's
reference evaluator (an independent executor) against onnxruntime. Bounds, and why (README "Parity"):
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx.reference import ReferenceEvaluator

import runtime
from runtime.noise import standard_normal

from . import quality, variants
from .build import load_run
from .verify import ELBO_TOLERANCE, PARITY_SEED, PARITY_TOLERANCE

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
PIXEL_LEVELS = {"fp32": 1, "fp16": 2, "int8": 255}  # max |uint8 difference| of sampled PNG pixels vs torch


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


def _torch_outputs(vae, x: np.ndarray, eps: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        mu, logvar = vae.encoder(torch.from_numpy(x))
        z = vae.reparameterize(mu, logvar, torch.from_numpy(eps))
        return {"z": z.numpy(), "mu": mu.numpy(), "logvar": logvar.numpy(), "x_hat": vae.decode(z).numpy(),
                "sample": vae.decode(torch.from_numpy(eps)).numpy()}


def verify_export(run_dir: str | Path, export_dir: str | Path, batch_sizes=BATCH_SIZES) -> list[Row]:
    """Every check for every variant of the export; a Row each, worst case over the batch sizes."""
    vae, ckpt = load_run(Path(run_dir))
    reference = ckpt["reference_x"]
    models = {v: runtime.load(export_dir, variant=v) for v in runtime.load(export_dir).manifest["variants"]}
    if models["fp32"].spec["latent_dim"] != vae.latent_dim or list(models["fp32"].image_shape) != ckpt["image_shape"]:
        raise ValueError(f"{export_dir} does not come from {run_dir}: latent or image shape differ")
    worst: dict[tuple, float] = {}

    def keep(variant, check, metric, value):
        key = (variant, check, metric)
        better_is_high = metric == "psnr_db"
        if key not in worst or (value < worst[key] if better_is_high else value > worst[key]):
            worst[key] = value

    for n in batch_sizes:
        x = (reference[torch.arange(n) % len(reference)].float() / 255.0).numpy()  # (n, C, H, W)
        eps = standard_normal(PARITY_SEED + n, (n, vae.latent_dim))
        want = _torch_outputs(vae, x, eps)
        for variant, model in models.items():
            enc = model.encode(x, eps=eps)
            got = {"z": enc.z, "mu": enc.mu, "logvar": enc.logvar, "x_hat": model.decode(want["z"])}
            for name, (metric, _) in TOLERANCES[variant].items():
                keep(variant, name, metric, _metric(metric, got[name], want[name]))
            pixels = np.abs(runtime.to_uint8(model.sample(n, eps=eps)).astype(int) - runtime.to_uint8(want["sample"]))
            keep(variant, "sample pixels (uint8)", "max_levels", float(pixels.max()))
            keep(variant, "sample pixels (uint8)", "fraction_differing", float((pixels > 0).mean()))

    x = (reference.float() / 255.0).numpy()
    eps = standard_normal(PARITY_SEED, (len(x), vae.latent_dim))
    from train.elbo import negative_elbo

    with torch.no_grad():
        _, recon, kl = negative_elbo(vae, torch.from_numpy(x), torch.from_numpy(eps))
    torch_elbo = float((recon.double() + kl.double()).mean())
    likelihood = models["fp32"].spec["likelihood"]
    rows = [Row(v, c, m, value, _bound(v, c, m)) for (v, c, m), value in worst.items()]
    for variant, model in models.items():
        onnx_elbo = float(quality.neg_elbo(lambda x_, e_: tuple(model.encode(x_, eps=e_)), model.decode, x, eps,
                                           likelihood).mean())
        if variant == "fp32":
            rows.append(Row(variant, "-ELBO vs torch (nats/image)", "abs_diff", abs(onnx_elbo - torch_elbo), ELBO_TOLERANCE))
        else:
            rows.append(Row(variant, "-ELBO vs torch", "relative_change", abs(onnx_elbo - torch_elbo) / abs(torch_elbo),
                            variants.GATES[variant]["max_neg_elbo_change"]))
        rows.append(Row(variant, "onnx.reference vs onnxruntime", "max_abs",
                        _reference_diff(model, x[:7], eps[:7]), REFERENCE_TOLERANCE))
    return rows


def _bound(variant: str, check: str, metric: str) -> float | None:
    if check in TOLERANCES[variant]:
        return TOLERANCES[variant][check][1]
    return PIXEL_LEVELS[variant] if metric == "max_levels" else None  # the fraction is reported, not bounded


def _reference_diff(model, x: np.ndarray, eps: np.ndarray) -> float:
    """Max |onnx.reference.ReferenceEvaluator - onnxruntime| over both graphs of a variant."""
    files = model.manifest["variants"][model.variant]
    enc = ReferenceEvaluator(onnx.load(model.path / files["encoder"])).run(None, {"x": x, "eps": eps})
    dec = ReferenceEvaluator(onnx.load(model.path / files["decoder"])).run(None, {"z": enc[0]})
    got = model.encode(x, eps=eps)
    diffs = [np.abs(a - b).max() for a, b in zip(enc, got)] + [np.abs(dec[0] - model.decode(enc[0])).max()]
    return float(max(diffs))


def format_table(rows: list[Row]) -> str:
    lines = [f"{'variant':7}  {'check':32}  {'metric':18}  {'measured':>10}  {'bound':>10}  ok", "-" * 90]
    for r in rows:
        bound = "-" if r.bound is None else f"{r.bound:.3g}"
        lines.append(f"{r.variant:7}  {r.check:32}  {r.metric:18}  {r.measured:10.3g}  {bound:>10}  "
                     f"{'yes' if r.ok else 'NO'}")
    return "\n".join(lines)
