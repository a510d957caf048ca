"""Export a VAE to an export directory: two graphs, their spec, a manifest; atomically.

    edgevae export runs/shapes --out exports/shapes                    # a run of `edgevae train`
    edgevae export --diffusers my-vae --out exports/my-vae             # any Source: export/api.py, __main__.py

`write_export` is the one path every model takes (a `Source` from export/adapters.py); `export` reads a
run directory and hands its model to it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import edgevae
from edgevae import _units
from edgevae import spec as S
from edgevae.train import checkpoint as checkpoint_io
from edgevae.train.config import TrainConfig
from edgevae.train.folder import preprocessing

from . import adapters, checks, destination, gates, graphs, tiled, variants


class ExportError(RuntimeError):
    """The run directory cannot be exported, or the destination is in the way."""


def load_run(run_dir: Path, checkpoint: str = "auto") -> tuple[adapters.EdgeVAESource, dict]:
    """The trained model as a Source, and its checkpoint (train/checkpoint.py's load_run), errors as ExportError."""
    try:
        vae, ckpt, _ = checkpoint_io.load_run(run_dir, checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise ExportError(str(e)) from None
    return adapters.from_edgevae(vae), ckpt


def make_spec(source, pair_id: str, parity: dict, extra: dict) -> dict:
    """The spec both graphs of every variant share; role, variant, ops and quality are added per file."""
    mode = S.IMAGE_MODES[source.image_shape[0]]
    spec = {
        "schema_version": S.SCHEMA_VERSION,
        "pair_id": pair_id,
        "model": source.kind,
        "source": source.info,
        "latent_shape": list(source.latent_shape),
        "latent_dim": source.latent_dim,
        "image_shape": list(source.image_shape),
        "image_mode": mode,
        "pixel_range": [0.0, 1.0],
        "native_range": list(source.native_range),
        "prior": source.prior,
        "preprocessing": {"mode": mode, "fit": "crop", "resample": "lanczos",
                          "alpha": "keep" if mode == "RGBA" else "matte", "matte": [0, 0, 0]},
        "likelihood": None,
        "likelihood_params": {},
        "classes": None,
        "noise": S.NOISE,
        "training": None,  # an imported model: `source` says where it came from
        "tileable": source.tileable,
        "parity": {**parity, "torch": torch.__version__, "onnxruntime": ort.__version__},
        "opset": graphs.OPSET,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "edgevae_version": edgevae.__version__,
    }
    if source.prior is None and source.prior_note:
        spec["prior_note"] = source.prior_note
    if source.latent_scaling is not None:
        spec["latent_scaling"] = source.latent_scaling
    if source.tileable:
        spec["latent_scale"] = source.latent_scale
    return {**spec, **extra}


def edgevae_fields(vae, ckpt: dict, elbo: dict) -> dict:
    """What a run of `edgevae train` adds to the spec: its likelihood, classes, training summary, ELBO parity."""
    config = ckpt["config"]
    return {
        "arch": config["arch"],
        # how an image file becomes x: what training's loaders did, so encode sees what training saw
        "preprocessing": preprocessing(TrainConfig.from_dict(config), ckpt["image_shape"][0]).to_spec(),
        "likelihood": config["likelihood"],
        "likelihood_params": gates.likelihood_params(vae),
        "diagnostics": ckpt.get("diagnostics") or None,  # the latent check training stored (train/diagnostics.py)
        "prior_fit": _prior_fit(ckpt.get("prior_fit")),  # the fitted prior folded into both graphs (train/prior.py)
        "classes": list(ckpt["classes"]) if vae.conditional else None,  # the labels y indexes
        "dataset_classes": list(ckpt["classes"]),
        "training": {"dataset": ckpt["dataset"], "epochs": ckpt["epoch"], "checkpoint": Path(ckpt["path"]).name,
                     "test_neg_elbo": ckpt["metrics"]["test_neg_elbo"],
                     "config": TrainConfig.from_dict(config).summary()},  # whitelisted: no local paths
    }


def _prior_fit(entry: dict | None) -> dict | None:
    """The spec's record of a fitted prior: what was fitted, on how many images, how far from N(0, I) it was."""
    if not entry:
        return None
    from edgevae.train.prior import describe

    per_class = {"classes": list(entry["classes"])} if "classes" in entry else {}  # images per class
    mixture = {"components": list(entry["components"])} if "weights" in entry else {}  # images per component
    if "directions" in entry:  # a factored mixture: each component's own directions beside the shared base
        mixture["directions"] = int(entry["directions"].shape[-1])
    kind = "gaussian-mixture" if mixture else "gaussian-per-class" if per_class else "gaussian"
    return {"kind": kind, "images": int(entry["images"]), **per_class, **mixture,
            "eigenvalues": list(entry["eigenvalues"]), "note": describe(entry)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_destination(protect: Path | None, out: Path, force: bool) -> None:
    """export/destination.py's rules (what --force may replace), its refusals as ExportError."""
    try:
        destination.check(out, protect, force)
    except destination.DestinationError as e:
        raise ExportError(str(e)) from None


def export(run_dir: str | os.PathLike, out: str | os.PathLike, force: bool = False, variants_: tuple = (),
           checkpoint: str = "auto", log=print) -> Path:
    """Export a run of `edgevae train`, verify, and move the result into `out` in one rename; returns `out`.

    variants_: any of "int8", "fp16"; each is written only if it passes its quality gate.
    checkpoint: "auto" (best.pt when the run has one, else checkpoint.pt), "best" or "last".
    """
    run_dir, out = Path(run_dir), Path(out)
    _check_destination(run_dir, out, force)  # before reading the run: a destination in the way is said first
    vae, ckpt = load_run(run_dir, checkpoint)
    log(f"exporting {ckpt['path']} ({vae.kind}, {ckpt['config']['arch']}, "
        f"{'conditional on ' + str(vae.num_classes) + ' classes, ' if vae.conditional else ''}"
        f"{ckpt['config']['likelihood']}, epoch {ckpt['epoch']})")
    return write_export(vae, out, ckpt, force=force, variants_=variants_, log=log, protect=run_dir)


def write_export(source, out: Path, reference: dict, *, force: bool = False, variants_: tuple = (),
                 tolerance: float | None = None, log=print, protect: Path | None = None) -> Path:
    """The generic path: graphs of a Source, every check, the spec, written atomically into `out`.

    reference: {"reference_x": uint8 (N, C, H, W)} images for parity (a run's checkpoint has them, with its
    labels and metrics; imported models get `checks.reference_images`). ELBO parity and variants need a
    likelihood, so only EdgeVAE runs have them. tolerance: the family's parity bound (adapters.TOLERANCES).
    """
    out = Path(out)
    _check_destination(protect, out, force)
    destination.clear_stale(out)
    own = isinstance(source, adapters.EdgeVAESource)
    if variants_ and not own:
        raise ExportError("--int8/--fp16 need a likelihood to gate them: only runs of `edgevae train` have one")
    tolerance = adapters.TOLERANCES[source.family] if tolerance is None else tolerance
    fp32 = graphs.export_graphs(source)
    for name, proto in zip((S.ENCODER_FILE, S.DECODER_FILE), fp32):
        gates.check_graph(proto, name)
    parity = checks.parity(source, reference, *fp32, tolerance)
    if own:  # the run's fp32 row of the bounds table, as `edgevae verify` measures it; refuses a collapsed model
        gates.check_bounds(source, reference, *fp32)
    elbo = gates.elbo_parity(source, reference, *fp32) if own else None
    log("verified: onnx.checker ok, no random op, max |onnxruntime - torch| "
        + ", ".join(f"{k} {v:.1e}" for k, v in parity["max_abs_diff"].items())
        + f" (bound {tolerance:g}" + (" x max(1, max |torch|)" if "scale" in parity else "")
        + f", batch {', '.join(map(str, parity['batch_sizes']))}"
        + (f" at {parity['image_shape'][1]}x{parity['image_shape'][2]}" if not own else "")
        + (f"; tiles of {'x'.join(map(str, parity['tile_latent']))} latent cells" if source.tileable else "") + ")"
        + ("" if elbo is None else f"; -ELBO torch {elbo['neg_elbo_torch']:.4f}, onnx {elbo['neg_elbo_onnx']:.4f}"
           if elbo["neg_elbo_onnx"] is not None else f"; -ELBO through the graphs {elbo['note']}")
        + ("; within the bounds table, not collapsed" if own else ""))
    if elbo is not None:
        parity["elbo"] = elbo
    tiled_graphs = {}  # role -> [(proto, record)]: the tiled decoder and encoder (export/tiled.py), if known
    for role, cut in (("decoder", tiled.decoder_units), ("encoder", tiled.encoder_units)):
        units = cut(source) if not own else None
        if not units:
            continue
        tiled_graphs[role] = tiled.export_units(units, role)
        for proto, record in tiled_graphs[role]:
            gates.check_graph(proto, record["file"])
        check = parity[_units.PLANS[role]] = tiled.parity(source, role, tiled_graphs[role], tolerance)
        log(f"tiled {role}: {len(units)} units, max |tiled - torch| {check['max_abs_diff']:.1e} (bound "
            f"{tolerance:g}; latent {'x'.join(map(str, check['latent']))}, tiles of "
            f"{' and '.join(map(str, check['tiles']))} cells)")
    kept = {"fp32": (fp32, None)}
    feeds = variants.calibration(source, reference, fp32[0]) if "int8" in variants_ else {}
    for variant in variants_:
        static = {role for role, proto in zip(("encoder", "decoder"), fp32)
                  if variants.is_static(proto, feeds.get(role))}  # int8 with calibrated ranges (the others dynamic)
        made, tried = {}, set()  # (role, recipe) -> graph: a graph an earlier attempt built is not built again
        for attempt in variants.ATTEMPTS.get(variant, ({},)):  # int8: every layer, else less of it (ATTEMPTS)
            keys = tuple((role, variants.recipe(attempt, role, static)) for role in ("encoder", "decoder"))
            if keys in tried:
                continue  # the graphs of an earlier attempt (dynamic quantization has no heads to leave out)
            tried.add(keys)
            for (role, how), proto in zip(keys, fp32):
                if (role, how) not in made:
                    made[role, how] = variants.make(variant, proto, feeds.get(role), role=role, **attempt)
                    gates.check_graph(made[role, how], variants.file_name(role, variant))
            candidate = tuple(made[key] for key in keys)
            q = gates.variant_quality(variant, source, reference, fp32, candidate)
            if q["passed"]:
                break
        if q["passed"]:
            q["layout"] = variants.layout(attempt, static)
            kept[variant] = (candidate, q)
            log(f"{variant}: within its bounds: {gates.describe(q)}" + (f"; {q['layout']}" if q["layout"] else ""))
        else:
            log(f"{variant}: NOT written, outside its bounds: {gates.describe(q)}. {variants.WHY_NOT[variant]}")

    pair_id = uuid.uuid4().hex
    extra = edgevae_fields(source, reference, elbo) if own else {}
    for role, unit_graphs in tiled_graphs.items():
        extra[_units.PLANS[role]] = {"units": [record for _, record in unit_graphs]}
    spec = make_spec(source, pair_id, parity, extra)
    tmp = destination.stage(out)
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
        for role, unit_graphs in tiled_graphs.items():
            for k, (proto, record) in enumerate(unit_graphs):
                name = record["file"]
                graphs.set_spec(proto, S.dumps({**spec, "role": f"{_units.ROLES[role]}.{k:02d}", "variant": "fp32",
                                                "quality": None, "ops": sorted(graphs.op_types(proto))}))
                (tmp / name).write_bytes(proto.SerializeToString())
                manifest["files"][name] = {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
            manifest["variants"]["fp32"][_units.ROLES[role]] = [record["file"] for _, record in unit_graphs]
        (tmp / S.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _check_written(tmp, source, kept, tolerance)
        try:  # --force: the old export is swapped out only once the new one is complete
            destination.commit(tmp, out, protect, force)
        except destination.DestinationError as e:
            raise ExportError(str(e)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, entry in manifest["files"].items():
        log(f"wrote {out / name} ({entry['bytes']:,} bytes, sha256 {entry['sha256'][:12]}...)")
    log(f"wrote {out / S.MANIFEST} (pair_id {pair_id})")
    return out


def _check_written(directory: Path, vae: torch.nn.Module, kept: dict, tolerance: float) -> None:
    """The files as written load through the runtime (hashes, spec, pair) and decode as the graphs verified in
    memory do, on latents of the prior. Parity with PyTorch is what the gates above measured, on their own inputs
    and bounds; this checks the writing, so the reference is the verified graph itself: compared with PyTorch on
    other latents, a deep decoder's float32 rounding can land just past a bound the gates kept (1.6e-5 against
    1e-5 on a 56 x 68 colour run whose gates measured 6.3e-6)."""
    n = 8 if vae.latent_dim * 8 <= 1 << 16 else 1  # a latent-diffusion VAE at full size: one image is plenty
    inputs = {"z": edgevae.standard_normal(gates.PARITY_SEED, (n, *vae.latent_shape))}
    if vae.conditional:
        inputs["y"] = np.arange(n, dtype=np.int64) % vae.num_classes
    for variant, (protos, _) in kept.items():
        model = gates.load_export(directory, threads=1, variant=variant)
        got = model.decode(inputs["z"], labels=inputs.get("y"))
        expected = gates.ort_run(gates.session(protos[1]), vae, "decoder", inputs)["x_hat"]
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= tolerance:
            raise gates.ExportCheckError(f"written {variant} decoder differs from what was verified by {diff:.2e}")
        if variant == "fp32" and getattr(vae, "tileable", False) and "tiled_decoder" in model.spec:
            got = model.decode(inputs["z"], tile=max(1, vae.latent_shape[1] // 3))
            diff = float(np.max(np.abs(got - expected)))
            if not diff <= tolerance:
                raise gates.ExportCheckError(f"written tiled decoder differs from what was verified by {diff:.2e}")
