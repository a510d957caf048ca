"""One table of bounds for every variant, and the one measurement `edgevae export` and `edgevae verify` share.

Export writes a variant only when every row of its table is within bound, measured here exactly as
verify measures it -- the same inputs, batch sizes and reference (PyTorch), the same functions -- so a
variant export wrote passes `edgevae verify` on the same run. The encoder's outputs are bounded as well
as the decoder's, and the model itself must not have collapsed (COLLAPSE), whatever the variant.

Why these bounds (measured values in README "Parity"):
    fp32  both sides float32; GEMM/conv summation order differs (~1e-6 measured); a real defect is >= 1e-2.
          The latents' difference over max(1, max |torch|): float32 rounding is relative (gates.parity).
          x_hat within 1e-4, a fortieth of an 8-bit level: a residual decoder without normalization carries
          large activations, whose rounding reached 1.73e-5 on 72 x 72 RGBA sprites after 80 epochs of training
          (6.3e-6 after 49; MLPs ~1e-6).
    fp16  weights rounded to float16 (relative 2^-11 = 4.9e-4) through every layer: latents within 0.5% of
          their rms, images within 2 of 255 levels.
    int8  8-bit weights and per-batch 8-bit activations: latents within 5% of their rms, images >= 30 dB
          (error ~3% of the pixel range); the 8-bit sample pixels are reported, not bounded.
    -ELBO through the graphs against PyTorch in bits per dimension (so a bound means the same for a
          28 x 28 and a 64 x 64 x 4 model): fp32 2e-5 (0.01 nats on 28 x 28), fp16 1e-4, int8 2e-3
          (1% of an MNIST -ELBO); skipped where x_hat does not determine the likelihood (quality.NO_GRAPH_ELBO).
    reference: onnx's ReferenceEvaluator against onnxruntime, 1e-5 of max(1, the output's largest value)
          (float32, summation order: its rounding grows with the values, and a fitted prior's whitening L^-1
          magnifies it -- 1.01e-5 measured on mu up to 2.2; unit-scale outputs keep the absolute 1e-5); int8: within
          1% of each output's rms. The two requantize activations with their own rounding, so a value can land
          one 8-bit step apart and later layers carry it: a few pixels differ by much (on the Twemoji residual
          decoder without normalization, max 0.077 of the pixel range on 0.13% of pixels) while the images agree
          at 57.6 dB and stand equally far from PyTorch (34.6 dB each), so, like int8's other rows, the bound is
          on the rms (0.3% measured there), not the worst value.
    collapse: at least one active unit on the reference images (a VAE), and decoded samples that differ
          (a mean per-pixel std over z of at least 1e-3, a quarter of one 8-bit level): a decoder with
          constant output would pass every parity bound, so it is checked on its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgevae.noise import standard_normal
from edgevae.train.diagnostics import ACTIVE_THRESHOLD
from edgevae.train.elbo import latent_shape_of

from . import quality

BATCH_SIZES = (1, 7, 64, 256)
PARITY_SEED = 20_240_611  # eps for every check: fixed, so an export is reproducible and verify sees the same
LEVEL = 1 / 255  # one 8-bit level
OUTPUTS = ("z", "mu", "logvar", "x_hat")
SAMPLES = "sample pixels (uint8)"
ELBO = "-ELBO vs torch"
REFERENCE = "onnx.reference vs onnxruntime"
REFERENCE_BATCH = 7
ACTIVE, SPREAD = "active units", "x_hat spread over z"
SPREAD_BATCH = 64
PSNR_CAP = 200.0  # dB: what identical images report

# (metric, bound) per variant and check; None = measured and reported, not bounded.
BOUNDS = {
    "fp32": {"z": ("max_abs_scaled", 1e-5), "mu": ("max_abs_scaled", 1e-5), "logvar": ("max_abs_scaled", 1e-5),
             "x_hat": ("max_abs", 1e-4),
             SAMPLES: ("max_levels", 1), ELBO: ("bits_per_dim", 2e-5), REFERENCE: ("max_abs_scaled", 1e-5)},
    "fp16": {"z": ("rms_rel", 5e-3), "mu": ("rms_rel", 5e-3), "logvar": ("rms_rel", 5e-3),
             "x_hat": ("max_abs", 2 * LEVEL), SAMPLES: ("max_levels", 2), ELBO: ("bits_per_dim", 1e-4),
             REFERENCE: ("max_abs_scaled", 1e-5)},
    "int8": {"z": ("rms_rel", 0.05), "mu": ("rms_rel", 0.05), "logvar": ("rms_rel", 0.05), "x_hat": ("psnr_db", 30.0),
             SAMPLES: ("max_levels", None), ELBO: ("bits_per_dim", 2e-3), REFERENCE: ("rms_rel", 1e-2)},
}
COLLAPSE = {ACTIVE: ("count", 1), SPREAD: ("mean_std", 1e-3)}  # every variant: the model is not collapsed
AT_LEAST = {"psnr_db", "count", "mean_std"}  # metrics whose bound is a minimum
VARIANTS = tuple(BOUNDS)


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
        return self.measured >= self.bound if self.metric in AT_LEAST else self.measured <= self.bound

    def to_dict(self) -> dict:
        return {"check": self.check, "metric": self.metric, "measured": self.measured, "bound": self.bound,
                "ok": self.ok}


def metric(name: str, got: np.ndarray, want: np.ndarray) -> float:
    d = got.astype(np.float64) - want.astype(np.float64)
    if name == "max_abs":
        return float(np.max(np.abs(d)))
    if name == "max_abs_scaled":  # max |difference| over max(1, max |reference|): absolute at unit scale
        return float(np.max(np.abs(d)) / max(1.0, float(np.max(np.abs(want)))))
    if name == "rms":
        return float(np.sqrt(np.mean(d**2)))
    if name == "rms_rel":  # rms of the difference over the rms of the reference (1e-12: all-zero references)
        return float(np.sqrt(np.mean(d**2)) / max(np.sqrt(np.mean(want.astype(np.float64) ** 2)), 1e-12))
    if name == "psnr_db":  # capped: identical outputs would give inf, which JSON (the spec) cannot hold
        return float(min(quality.psnr(want, got), PSNR_CAP))
    raise ValueError(f"unknown metric {name!r}")


def _worse(name: str, a: float | None, b: float) -> float:
    if a is None:
        return b
    return min(a, b) if name in AT_LEAST else max(a, b)


def measure(variant: str, vae, ckpt: dict, encode, decode, reference=None, torch_elbo: float | None = None,
            batch_sizes=BATCH_SIZES) -> list[Row]:
    """Every row of BOUNDS[variant] and COLLAPSE for one variant, worst case over the batch sizes.

    encode(inputs) -> {"z"[, "mu", "logvar"]} and decode({"z"[, "y"]}) -> x_hat run the variant (sessions
    in memory at export, the files through the runtime in verify); reference(inputs) -> the same dict
    from onnx's reference evaluator for REFERENCE (skipped when None); torch_elbo the PyTorch -ELBO on the
    reference images (gates.elbo_parity_torch), computed once for all variants.
    """
    from . import gates

    table = BOUNDS[variant]
    worst: dict[tuple[str, str], float] = {}

    def keep(check: str, name: str, value: float) -> None:
        worst[(check, name)] = _worse(name, worst.get((check, name)), value)

    for n in batch_sizes:
        inputs = gates.encoder_inputs(vae, ckpt, n, PARITY_SEED + n)
        want = gates.torch_run(vae, "encoder", inputs)
        dec_in = gates.decoder_inputs(vae, want["z"], inputs)
        want.update(gates.torch_run(vae, "decoder", dec_in))
        got = {**encode(inputs), "x_hat": decode(dec_in)}
        for name in OUTPUTS:
            if name in want:  # the autoencoder has no mu or logvar
                if got[name].shape != want[name].shape:
                    raise gates.ExportCheckError(f"{variant} {name}: shape {got[name].shape} != torch "
                                                 f"{want[name].shape} at batch {n}")
                keep(name, table[name][0], metric(table[name][0], got[name], want[name]))
        if table["x_hat"][0] != "psnr_db":  # every variant reports the images' PSNR, bounded or not
            keep("x_hat", "psnr_db", metric("psnr_db", got["x_hat"], want["x_hat"]))
        eps = standard_normal(PARITY_SEED + n, (n, *latent_shape_of(vae)))
        sample_in = gates.decoder_inputs(vae, eps, inputs)
        pixels = np.abs(_uint8(decode(sample_in)).astype(int) - _uint8(gates.torch_run(vae, "decoder", sample_in)
                                                                        ["x_hat"]))
        keep(SAMPLES, "max_levels", float(pixels.max()))
        keep(SAMPLES, "fraction_differing", float((pixels > 0).mean()))
    rows = [Row(variant, check, name, value, table[check][1] if (check in table and table[check][0] == name) else None)
            for (check, name), value in worst.items()]
    if torch_elbo is not None:
        got_elbo = gates.graph_elbo(vae, encode, decode, ckpt)
        if got_elbo is not None:  # None: x_hat does not determine this likelihood (quality.NO_GRAPH_ELBO)
            dims = math.prod(vae.image_shape)
            rows.append(Row(variant, ELBO, "bits_per_dim", abs(got_elbo - torch_elbo) / (dims * math.log(2)),
                            table[ELBO][1]))
    if reference is not None:
        inputs = gates.encoder_inputs(vae, ckpt, REFERENCE_BATCH, PARITY_SEED)
        want = reference(inputs)
        got = {**encode(inputs), "x_hat": decode(gates.decoder_inputs(vae, want["z"], inputs))}
        name, bound = table[REFERENCE]
        rows.append(Row(variant, REFERENCE, name, max(metric(name, got[k], want[k]) for k in want), bound))
    return rows + collapse_rows(variant, vae, ckpt, encode, decode)


def collapse_rows(variant: str, vae, ckpt: dict, encode, decode) -> list[Row]:
    """Active units of the encoder on the reference images (a VAE) and the spread of decoded samples over z."""
    from . import gates

    rows = []
    inputs = gates.encoder_inputs(vae, ckpt, len(ckpt["reference_x"]), PARITY_SEED)
    out = encode(inputs)
    if "mu" in out:
        mu = out["mu"].reshape(len(out["mu"]), -1).astype(np.float64)
        active = int((mu.var(axis=0, ddof=1) > ACTIVE_THRESHOLD).sum()) if len(mu) > 1 else 0
        rows.append(Row(variant, ACTIVE, "count", float(active), COLLAPSE[ACTIVE][1]))
    if vae.kind == "ae":  # no prior: spread over the codes of real images
        z = out["z"][:SPREAD_BATCH]
    else:
        z = standard_normal(PARITY_SEED, (SPREAD_BATCH, *latent_shape_of(vae)))
    dec_in = {"z": z, **({"y": np.zeros(len(z), np.int64)} if vae.conditional else {})}  # one class: z alone varies
    spread = float(decode(dec_in).astype(np.float64).std(axis=0).mean())
    rows.append(Row(variant, SPREAD, "mean_std", spread, COLLAPSE[SPREAD][1]))
    return rows


def _uint8(images: np.ndarray) -> np.ndarray:
    """The runtime's 8-bit conversion (edgevae.to_uint8): what a saved PNG holds."""
    import edgevae

    return edgevae.to_uint8(images)


def summary(rows: list[Row]) -> dict:
    """A variant's quality record for its spec and the manifest: every row, the verdict, and the headline numbers."""
    by = {(r.check, r.metric): r.measured for r in rows}
    x_hat = next(r for r in rows if r.check == "x_hat")
    return {"passed": all(r.ok for r in rows), "checks": [r.to_dict() for r in rows],
            "x_hat": {x_hat.metric: x_hat.measured},
            "neg_elbo_bits_per_dim_change": by.get((ELBO, "bits_per_dim")),
            "psnr_db": by.get(("x_hat", "psnr_db"))}
