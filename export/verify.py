"""`edgevae verify RUN_DIR EXPORT_DIR`: prove the files on disk compute what the checkpoint does.

For every variant in the export, the graphs run through the runtime (the files as written, hashes
checked) against PyTorch with identical x and eps at several batch sizes, and through onnx's
reference evaluator (an independent executor) against onnxruntime, and the model is checked for
collapse. The bounds are export/bounds.py's one table, measured by the same function export uses
before it writes a variant, so what export wrote passes here (README "Parity" gives the numbers).
"""
from __future__ import annotations

from pathlib import Path

import onnx

from . import bounds, gates
from .bounds import BATCH_SIZES, BOUNDS, Row  # noqa: F401  (re-exported: the table and its rows)
from .build import load_run

REFERENCE_TOLERANCE = BOUNDS["fp32"][bounds.REFERENCE][1]  # onnx.reference vs onnxruntime (verify_source uses it)


def verify_export(run_dir: str | Path, export_dir: str | Path, batch_sizes=BATCH_SIZES) -> list[Row]:
    """Every check for every variant of the export; a Row each, worst case over the batch sizes."""
    fp32 = gates.load_export(export_dir)
    exported_from = {"best.pt": "best", "checkpoint.pt": "last"}[fp32.spec["training"]["checkpoint"]]
    vae, ckpt = load_run(Path(run_dir), exported_from)
    if list(fp32.latent_shape) != list(vae.latent_shape) \
            or list(fp32.image_shape) != list(ckpt["image_shape"]) \
            or fp32.kind != vae.kind or (fp32.classes is not None) != vae.conditional:
        raise ValueError(f"{export_dir} does not come from {run_dir}: model kind, latent or image shape differ")
    torch_elbo = gates.elbo_parity_torch(vae, ckpt)
    rows = []
    for variant in fp32.manifest["variants"]:
        model = gates.load_export(export_dir, variant=variant)
        files = model.manifest["variants"][variant]
        reference = gates.reference_function(*(onnx.load(model.path / files[role]) for role in ("encoder", "decoder")),
                                             vae)
        rows += bounds.measure(variant, vae, ckpt, *_model_functions(model), reference=reference,
                               torch_elbo=torch_elbo, batch_sizes=batch_sizes)
    return rows


def _model_functions(model):
    """(encode, decode) over dicts of named arrays, through the runtime's public API."""
    def encode(inputs):
        enc = model.encode(inputs["x"], eps=inputs.get("eps"), labels=inputs.get("y"))
        return {"z": enc.z} if enc.logvar is None else enc._asdict()
    return encode, lambda inputs: model.decode(inputs["z"], labels=inputs.get("y"))


def format_table(rows: list[Row]) -> str:
    lines = [f"{'variant':7}  {'check':32}  {'metric':18}  {'measured':>10}  {'bound':>10}  ok", "-" * 90]
    for r in rows:
        bound = "-" if r.bound is None else f"{r.bound:.3g}"
        lines.append(f"{r.variant:7}  {r.check:32}  {r.metric:18}  {r.measured:10.3g}  {bound:>10}  "
                     f"{'yes' if r.ok else 'NO'}")
    return "\n".join(lines)
