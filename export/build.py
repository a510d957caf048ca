"""Export a run directory to an export directory: two graphs, their spec, a manifest; atomically.

    edgevae export runs/shapes --out exports/shapes
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import edgevae
from edgevae import spec as S
from edgevae.train import checkpoint as checkpoint_io
from edgevae.train.config import TrainConfig
from edgevae.train.elbo import latent_shape_of

from . import gates, graphs, variants


class ExportError(RuntimeError):
    """The run directory cannot be exported, or the destination is in the way."""


def load_run(run_dir: Path, checkpoint: str = "auto") -> tuple[torch.nn.Module, dict]:
    """The trained model and its checkpoint (train/checkpoint.py's load_run), errors as ExportError."""
    try:
        vae, ckpt, _ = checkpoint_io.load_run(run_dir, checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise ExportError(str(e)) from None
    return vae, ckpt


def make_spec(vae, ckpt: dict, pair_id: str, parity: dict, elbo: dict) -> dict:
    """The spec both graphs of every variant share; role, variant, ops and quality are added per file."""
    config = ckpt["config"]
    return {
        "schema_version": S.SCHEMA_VERSION,
        "pair_id": pair_id,
        "model": config["model"],
        "arch": config["arch"],
        "source": {"kind": "edgevae"},
        "latent_shape": list(latent_shape_of(vae)),
        "latent_dim": vae.latent_dim,
        "image_shape": list(ckpt["image_shape"]),
        "image_mode": S.IMAGE_MODES[ckpt["image_shape"][0]],
        "pixel_range": [0.0, 1.0],
        "prior": S.PRIOR if config["model"] == "vae" else None,
        "preprocessing": preprocessing(ckpt),
        "likelihood": config["likelihood"],
        "likelihood_params": gates.likelihood_params(vae),
        "diagnostics": ckpt.get("diagnostics") or None,  # the latent check training stored (train/diagnostics.py)
        "classes": list(ckpt["classes"]) if vae.conditional else None,  # the labels y indexes
        "dataset_classes": list(ckpt["classes"]),
        "noise": S.NOISE,
        "training": {"dataset": ckpt["dataset"], "epochs": ckpt["epoch"], "checkpoint": Path(ckpt["path"]).name,
                     "test_neg_elbo": ckpt["metrics"]["test_neg_elbo"],
                     "config": TrainConfig.from_dict(config).summary()},  # whitelisted: no local paths
        "parity": {"batch_sizes": list(gates.PARITY_BATCH_SIZES), "tolerance": gates.PARITY_TOLERANCE,
                   "max_abs_diff": parity, "elbo": elbo, "torch": torch.__version__, "onnxruntime": ort.__version__},
        "opset": graphs.OPSET,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "edgevae_version": edgevae.__version__,
    }


def preprocessing(ckpt: dict) -> dict:
    """How an image file becomes x for this model: what training's image-folder loader did."""
    from edgevae.train.folder import MATTES

    config = ckpt["config"]
    channels = ckpt["image_shape"][0]
    return {"mode": S.IMAGE_MODES[channels], "fit": "crop", "resample": "lanczos",
            "alpha": "keep" if channels == 4 else "matte", "matte": list(MATTES[config["matte"]])}


def _check_destination(run_dir: Path, out: Path, force: bool) -> None:
    """`out` may be new, or with --force an earlier export or an empty directory; never anything else."""
    for stale in out.parent.glob(f".{out.name}.tmp-*") if out.parent.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)  # left by an export that was killed mid-write
    if not out.exists():
        return
    if not force:
        raise ExportError(f"{out} already exists (pass --force to replace it)")
    resolved, run = out.resolve(), run_dir.resolve()
    if resolved == run or resolved in run.parents:
        raise ExportError(f"--out {out} is the run directory or contains it; --force would delete the run")
    if not out.is_dir() or not ((out / S.MANIFEST).is_file() or not any(out.iterdir())):
        raise ExportError(f"--force replaces only an earlier export or an empty directory; {out} is neither")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(run_dir: str | os.PathLike, out: str | os.PathLike, force: bool = False, variants_: tuple = (),
           checkpoint: str = "auto", log=print) -> Path:
    """Export, verify, and move the result into `out` in one rename; returns `out`.

    variants_: any of "int8", "fp16"; each is written only if it passes its quality gate.
    checkpoint: "auto" (best.pt when the run has one, else checkpoint.pt), "best" or "last".
    """
    run_dir, out = Path(run_dir), Path(out)
    _check_destination(run_dir, out, force)
    vae, ckpt = load_run(run_dir, checkpoint)
    log(f"exporting {ckpt['path']} ({vae.kind}, {ckpt['config']['arch']}, "
        f"{'conditional on ' + str(vae.num_classes) + ' classes, ' if vae.conditional else ''}"
        f"{ckpt['config']['likelihood']}, epoch {ckpt['epoch']})")
    fp32 = graphs.export_graphs(vae)
    for name, proto in zip((S.ENCODER_FILE, S.DECODER_FILE), fp32):
        gates.check_graph(proto, name)
    parity = gates.parity(vae, ckpt, *fp32)
    elbo = gates.elbo_parity(vae, ckpt, *fp32)
    log("verified: onnx.checker ok, no random op, max |onnxruntime - torch| "
        + ", ".join(f"{k} {v:.1e}" for k, v in parity.items())
        + f" (bound {gates.PARITY_TOLERANCE:g}, batch {', '.join(map(str, gates.PARITY_BATCH_SIZES))})"
        + (f"; -ELBO torch {elbo['neg_elbo_torch']:.4f}, onnx {elbo['neg_elbo_onnx']:.4f}"
           if elbo["neg_elbo_onnx"] is not None else f"; -ELBO through the graphs {elbo['note']}")
        + "; not collapsed")
    kept = {"fp32": (fp32, None)}
    for variant in variants_:
        candidate = tuple(variants.make(variant, proto) for proto in fp32)
        for role, proto in zip(("encoder", "decoder"), candidate):
            gates.check_graph(proto, variants.file_name(role, variant))
        q = gates.variant_quality(variant, vae, ckpt, fp32, candidate)
        if q["passed"]:
            kept[variant] = (candidate, q)
            log(f"{variant}: within its bounds: {gates.describe(q)}")
        else:
            log(f"{variant}: NOT written, outside its bounds: {gates.describe(q)}")

    pair_id = uuid.uuid4().hex
    spec = make_spec(vae, ckpt, pair_id, parity, elbo)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the export should read like any directory
    try:
        manifest = {"schema_version": S.SCHEMA_VERSION, "pair_id": pair_id, "files": {}, "variants": {}}
        for variant, (protos, q) in kept.items():
            names = {}
            for role, proto in zip(("encoder", "decoder"), protos):
                name = names[role] = variants.file_name(role, variant)
                graphs.set_spec(proto, S.dumps({**spec, "role": role, "variant": variant, "quality": q,
                                                "ops": sorted(graphs.op_types(proto))}))
                (tmp / name).write_bytes(proto.SerializeToString())
                manifest["files"][name] = {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
            manifest["variants"][variant] = {**names, "quality": q}
        (tmp / S.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _check_written(tmp, vae, kept)
        if out.exists():  # --force: swap the old export out only once the new one is complete
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, entry in manifest["files"].items():
        log(f"wrote {out / name} ({entry['bytes']:,} bytes, sha256 {entry['sha256'][:12]}...)")
    log(f"wrote {out / S.MANIFEST} (pair_id {pair_id})")
    return out


def _check_written(directory: Path, vae: torch.nn.Module, kept: dict) -> None:
    """The files as written load through the runtime (hashes, spec, pair) and still decode as verified."""
    inputs = {"z": edgevae.standard_normal(gates.PARITY_SEED, (8, *latent_shape_of(vae)))}
    if vae.conditional:
        inputs["y"] = np.arange(8, dtype=np.int64) % vae.num_classes
    want = gates.torch_run(vae, "decoder", inputs)["x_hat"]
    for variant, (protos, _) in kept.items():
        got = edgevae.load(directory, threads=1, variant=variant).decode(inputs["z"], labels=inputs.get("y"))
        expected = want if variant == "fp32" else \
            gates.ort_run(gates.session(protos[1]), vae, "decoder", inputs)["x_hat"]
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= gates.PARITY_TOLERANCE:
            raise gates.ExportCheckError(f"written {variant} decoder differs from what was verified by {diff:.2e}")
