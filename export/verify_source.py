"""`edgevae verify --diffusers DIR EXPORT_DIR` (or --module, --antixk, --pythae): an imported model's export
checked against the model it came from, given the same way as at export.

The files as written load through the runtime (hashes and pair checked); for each batch size the runtime's
encode (the same x and eps) and decode are compared with the Source in PyTorch, the bound being the
family's (the spec's parity tolerance); decoded uint8 pixels may differ by at most one level; onnx's
ReferenceEvaluator, an independent executor, is compared with onnxruntime on small batches; a tileable
export's tiled decode is compared with its whole decode: bounded by the family's tolerance when the
export has a tiled decoder (exact by construction, runtime/_units.py), else reported (blended tiles see
their own GroupNorm statistics and attention context, so the difference is the model's, not a defect).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

import edgevae

from . import checks, gates
from .reference_ops import OPS
from .verify import REFERENCE_TOLERANCE, Row

PIXEL_LEVELS = 1  # max |uint8 difference| of decoded images vs torch (a ~1e-5 difference straddles a rounding)
REFERENCE_BATCH = 2  # onnx.reference is plain numpy: a small batch keeps a conv+attention model in seconds


def default_batch_sizes(source) -> tuple[int, ...]:
    """1, 7, 64 for images up to 64x64 pixels; batch 1 beyond (a 512x512 batch of 64 needs tens of GB)."""
    _, h, w = source.image_shape
    return (1, 7, 64) if h * w <= 64 * 64 else (1,)


def verify_source(source, export_dir: str | Path, batch_sizes=None) -> list[Row]:
    """Every check of an imported export against its Source; a Row each, worst case over the batch sizes."""
    model = gates.load_export(export_dir)
    spec = model.spec
    if spec.get("source", {}).get("kind") != source.family or tuple(spec["latent_shape"]) != source.latent_shape \
            or tuple(spec["image_shape"]) != source.image_shape:
        raise ValueError(f"{export_dir} does not come from this model: export {spec.get('source', {}).get('kind')} "
                         f"latent {spec['latent_shape']} image {spec['image_shape']}, model {source.family} latent "
                         f"{list(source.latent_shape)} image {list(source.image_shape)}")
    tolerance = spec["parity"]["tolerance"]
    worst: dict[tuple, float] = {}

    def keep(check, metric, value):
        worst[(check, metric)] = max(worst.get((check, metric), 0.0), value)

    for n in batch_sizes or default_batch_sizes(source):
        inputs = gates.encoder_inputs(source, {"reference_x": checks.reference_images(n, source.image_shape)}, n,
                                      gates.PARITY_SEED + n)
        want = gates.torch_run(source, "encoder", inputs)
        want.update(gates.torch_run(source, "decoder", {"z": want["z"]}))
        enc = model.encode(inputs["x"], eps=inputs.get("eps"))
        got = {"z": enc.z, "mu": enc.mu, "logvar": enc.logvar, "x_hat": model.decode(want["z"])}
        for name, value in want.items():
            keep(name, "max_abs", float(np.max(np.abs(got[name] - value))))
        pixels = np.abs(edgevae.to_uint8(got["x_hat"]).astype(int) - edgevae.to_uint8(want["x_hat"]))
        keep("decoded pixels (uint8)", "max_levels", float(pixels.max()))
    rows = [Row("fp32", c, m, v, tolerance if m == "max_abs" else PIXEL_LEVELS) for (c, m), v in worst.items()]
    inputs = gates.encoder_inputs(source, {"reference_x": checks.reference_images(REFERENCE_BATCH,
                                                                                  source.image_shape)},
                                  REFERENCE_BATCH, gates.PARITY_SEED)
    rows.append(Row("fp32", "onnx.reference vs onnxruntime", "max_abs", _reference_diff(model, inputs),
                    max(REFERENCE_TOLERANCE, tolerance)))
    if spec.get("tileable") and min(source.latent_shape[1:]) >= 4:
        z = want["z"][:1]
        h = source.latent_shape[1]
        exact = "tiled_decoder" in spec
        tiled = model.decode(z, tile=max(2, h // 3 if exact else h // 2), overlap=None if exact else max(1, h // 8))
        rows.append(Row("fp32", "tiled decoder vs whole decode" if exact else "blended tiles vs whole decode",
                        "max_abs", float(np.max(np.abs(tiled - model.decode(z)))), tolerance if exact else None))
    return rows


def _reference_diff(model, inputs: dict) -> float:
    """Max |onnx.reference.ReferenceEvaluator - onnxruntime| over both graphs."""
    files = model.manifest["variants"][model.variant]
    enc = ReferenceEvaluator(onnx.load(model.path / files["encoder"]), new_ops=OPS)
    dec = ReferenceEvaluator(onnx.load(model.path / files["decoder"]), new_ops=OPS)
    z, mu, logvar = enc.run(None, {"x": inputs["x"], "eps": inputs["eps"]})
    x_hat = dec.run(None, {"z": z})[0]
    got = model.encode(inputs["x"], eps=inputs["eps"])
    return float(max(np.abs(got.z - z).max(), np.abs(got.mu - mu).max(), np.abs(got.logvar - logvar).max(),
                     np.abs(model.decode(z) - x_hat).max()))

