"""Export a run directory to an export directory: two graphs, their spec, a manifest; atomically.

    python -m export runs/shapes --out exports/shapes
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

import runtime
from runtime import spec as S
from train.config import TrainConfig
from train.model import build

from . import graphs, verify


class ExportError(RuntimeError):
    """The run directory cannot be exported, or the destination is in the way."""


def load_run(run_dir: Path) -> tuple[torch.nn.Module, dict]:
    """The trained model and its checkpoint, read with weights_only=True (no pickle code runs)."""
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        raise ExportError(f"{run_dir}: no checkpoint.pt (is it a run directory written by `python -m train`?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        config = TrainConfig.from_dict(ckpt["config"])
    except (RuntimeError, KeyError, ValueError, TypeError, EOFError) as e:
        raise ExportError(f"{path}: not a readable EdgeVAE checkpoint ({str(e).splitlines()[0]})") from None
    vae = build(config, tuple(ckpt["image_shape"]), num_classes=len(ckpt["classes"]))
    vae.load_state_dict(ckpt["model"])
    return vae.eval(), ckpt


def make_spec(ckpt: dict, pair_id: str, parity: dict, ops: dict[str, list[str]]) -> dict:
    config = ckpt["config"]
    return {
        "schema_version": S.SCHEMA_VERSION,
        "role": None,  # set per graph
        "pair_id": pair_id,
        "model": config["model"],
        "arch": config["arch"],
        "latent_dim": config["latent_dim"],
        "image_shape": list(ckpt["image_shape"]),
        "pixel_range": [0.0, 1.0],
        "likelihood": config["likelihood"],
        "classes": None,  # conditional models list their class names here
        "dataset_classes": list(ckpt["classes"]),
        "noise": S.NOISE,
        "training": {"dataset": ckpt["dataset"], "epochs": ckpt["epoch"],
                     "test_neg_elbo": ckpt["metrics"]["test_neg_elbo"], "config": config},
        "parity": {"batch_sizes": list(verify.PARITY_BATCH_SIZES), "tolerance": verify.PARITY_TOLERANCE,
                   "max_abs_diff": parity, "torch": torch.__version__, "onnxruntime": ort.__version__},
        "opset": graphs.OPSET,
        "ops": ops,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "edgevae_version": runtime.__version__,
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(run_dir: str | os.PathLike, out: str | os.PathLike, force: bool = False, log=print) -> Path:
    """Export, verify, and move the result into `out` in one rename; returns `out`."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists (pass --force to replace it)")
    vae, ckpt = load_run(run_dir)
    encoder, decoder = graphs.export_graphs(vae, tuple(ckpt["image_shape"]))
    ops = {S.ENCODER_FILE: sorted(verify.check_graph(encoder, S.ENCODER_FILE)),
           S.DECODER_FILE: sorted(verify.check_graph(decoder, S.DECODER_FILE))}
    parity = verify.parity(vae, encoder, decoder, ckpt["reference_x"])
    pair_id = uuid.uuid4().hex
    spec = make_spec(ckpt, pair_id, parity, ops)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the export should read like any directory
    try:
        for role, name, proto in (("encoder", S.ENCODER_FILE, encoder), ("decoder", S.DECODER_FILE, decoder)):
            graphs.set_spec(proto, S.dumps({**spec, "role": role}))
            (tmp / name).write_bytes(proto.SerializeToString())
        manifest = {"schema_version": S.SCHEMA_VERSION, "pair_id": pair_id,
                    "files": {name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
                              for name in (S.ENCODER_FILE, S.DECODER_FILE)}}
        (tmp / S.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _check_written(tmp, vae)
        if out.exists():  # --force: swap the old export out only once the new one is complete
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in parity.items())
    log(f"verified: onnx.checker ok, no random op, max |onnxruntime - torch| {diffs} "
        f"(bound {verify.PARITY_TOLERANCE:g}, batch {', '.join(map(str, verify.PARITY_BATCH_SIZES))})")
    for name, entry in manifest["files"].items():
        log(f"wrote {out / name} ({entry['bytes']:,} bytes, sha256 {entry['sha256'][:12]}...)")
    log(f"wrote {out / S.MANIFEST} (pair_id {pair_id})")
    return out


def _check_written(directory: Path, vae: torch.nn.Module) -> None:
    """The files as written load through the runtime (hashes, spec, pair) and still match torch."""
    model = runtime.load(directory, threads=1)
    z = runtime.standard_normal(verify.PARITY_SEED, (8, vae.latent_dim))
    with torch.no_grad():
        want = vae.decode(torch.from_numpy(z)).numpy()
    diff = float(np.max(np.abs(model.decode(z) - want)))
    if not diff <= verify.PARITY_TOLERANCE:
        raise verify.ExportCheckError(f"written decoder differs from torch by {diff:.2e}")
