"""The `edgevae` command (also `python -m edgevae`): every stage, from training to generating.

    edgevae train --data shapes --epochs 30 --out runs/shapes           # needs the train extra (torch)
    edgevae export runs/shapes --out exports/shapes                     # needs the train extra
    edgevae verify runs/shapes exports/shapes                           # needs the train extra
    edgevae evaluate|report|download ...                                # need the train extra

    edgevae sample exports/shapes --n 64 --seed 0 --out grid.png
    edgevae encode exports/shapes a.png b.png --out latents.npy      # + latents.json
    edgevae reconstruct exports/shapes a.png b.png --out recon.png
    edgevae interpolate exports/shapes seed:1 seed:2 --steps 10 --method slerp --out strip.png
    edgevae info exports/shapes

The runtime's own commands (sample ... info) need only numpy, onnxruntime and Pillow; the stages in
STAGES are imported on demand, and without torch they print the install command instead of a traceback.
Bad input exits with status 2 and one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ._images import save_grid
from ._latent import METHODS
from ._model import load
from .errors import EdgeVAEError
from .noise import standard_normal


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as e:
        raise EdgeVAEError(f"cannot write {path}: {e.strerror or e}") from None


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)  # to a buffer: np.save on a path would append ".npy" to --out behind our back
    return buffer.getvalue()


def _sample(args, model) -> str:
    images = model.sample(args.n, seed=args.seed, temperature=args.temperature, labels=_label(args, model))
    path = save_grid(images, args.out, nrow=args.nrow, scale=args.scale, background=args.background)
    return f"wrote {path} ({args.n} samples, seed {args.seed}, temperature {args.temperature}"


def _encode(args, model) -> str:
    x = _images(args.images, model)
    label = _label(args, model)
    enc = model.encode(x, labels=label) if model.kind == "ae" else \
        model.encode(x, seed=args.seed, temperature=args.temperature, labels=label)
    latents = enc.z if args.sampled else enc.mu
    out = Path(args.out)
    logvar = enc.logvar if enc.logvar is not None else [None] * len(enc.z)  # the autoencoder has none
    record = {"latent": "z (sampled)" if args.sampled else "mu", "seed": args.seed, "temperature": args.temperature,
              "images": [{"file": str(p), "z": z.tolist(), "mu": m.tolist(),
                          "logvar": None if lv is None else lv.tolist()}
                         for p, z, m, lv in zip(args.images, enc.z, enc.mu, logvar)]}
    json_path = out.with_suffix(".json")
    _write(json_path, (json.dumps(record, indent=1) + "\n").encode())
    _write(out, _npy_bytes(latents))
    shape = "x".join(map(str, latents.shape))
    return f"wrote {out} ({'z' if args.sampled else 'mu'} {shape}) and {json_path}"


def _reconstruct(args, model) -> str:
    x = _images(args.images, model)
    recon = model.reconstruct(x, sampled=args.sampled, seed=args.seed if args.sampled else None,
                              labels=_label(args, model))
    path = save_grid(np.concatenate([x, recon]), args.out, nrow=len(x), scale=args.scale, background=args.background)
    return f"wrote {path} (top row: {len(x)} inputs, bottom row: reconstructions)"


def _images(paths, model) -> np.ndarray:
    """The files as the model's input, prepared as its spec says; what was done is said on stderr."""
    notes: list[str] = []
    x = model.load_images(paths, notes=notes)
    for line in notes:
        print(f"note: {line} (the model's preprocessing: {_describe(model.preprocessing)})", file=sys.stderr)
    return x


def _describe(pre: dict) -> str:
    alpha = "alpha kept" if pre["alpha"] == "keep" else f"alpha onto {pre['matte']}"
    return f"{pre['mode']}, {alpha}, {pre['fit']} with {pre['resample']}"


def _label(args, model):
    """--label as a class name, or as an index when it is digits that name no class."""
    label = args.label
    if label is not None and model.classes is not None and label not in model.classes and label.isdigit():
        return int(label)
    return label


def _endpoint(text: str, model):
    """`seed:N` -> that seed's N(0, I) latent; anything else is an image file."""
    if text.startswith("seed:"):
        try:
            seed = int(text[5:])
        except ValueError:
            raise EdgeVAEError(f"expected seed:<int>, got {text!r}") from None
        return standard_normal(seed, (1, *model.latent_shape))[0]
    return _images([text], model)[0]


def _interpolate(args, model) -> str:
    images = model.interpolate(_endpoint(args.a, model), _endpoint(args.b, model), args.steps, args.method,
                               labels=_label(args, model))
    path = save_grid(images, args.out, nrow=args.steps, scale=args.scale, background=args.background)
    return f"wrote {path} ({args.steps} steps, {args.method}, {args.a} -> {args.b})"


def _traverse(args, model) -> str:
    dims = range(min(model.latent_dim, 8)) if args.dims is None else args.dims
    rows = [model.traverse(d, steps=args.steps, span=args.span, labels=_label(args, model)) for d in dims]
    path = save_grid(np.concatenate(rows), args.out, nrow=args.steps, scale=args.scale, background=args.background)
    return f"wrote {path} (dims {', '.join(map(str, dims))}, {args.steps} steps in [-{args.span}, {args.span}])"


def _manifold(args, model) -> str:
    images = model.manifold(args.steps, labels=_label(args, model))
    path = save_grid(images, args.out, nrow=args.steps, scale=args.scale, background=args.background)
    return f"wrote {path} ({args.steps}x{args.steps} normal quantiles of the 2-D latent)"


def _info(args, model) -> str:
    spec = model.spec
    if args.json:
        return json.dumps(model.specs, indent=2, sort_keys=True)
    c, h, w = model.image_shape
    training, parity = spec["training"], spec["parity"]
    elbo = parity.get("elbo", {})
    lines = [
        f"export      {model.path}",
        f"model       {spec['model']} ({spec.get('arch', spec.get('source', {}).get('kind', '?'))}), "
        f"likelihood {spec['likelihood'] or 'not recorded (imported)'}",
        f"image       {c}x{h}x{w}, pixels in {spec['pixel_range']}"
        + (f" (the model's own range {spec['native_range']} is folded into the graphs)"
           if spec.get("native_range", [0.0, 1.0]) != [0.0, 1.0] else ""),
        f"latent      {'x'.join(map(str, model.latent_shape))}"
        + ("" if len(model.latent_shape) == 1 else f" (spatial, {model.latent_dim} values)")
        + ("" if model.prior else "; no prior: sample is refused, encode/decode work")
        + (f"; tileable, {spec['latent_scale']} px per latent cell" if spec.get("tileable") else ""),
        f"classes     {', '.join(spec['classes']) if spec['classes'] else 'none (unconditional)'}",
        f"trained on  {training.get('dataset')}, {training.get('epochs')} epochs, "
        f"test -ELBO {training.get('test_neg_elbo'):.3f} nats/image" if training else
        f"imported    {_source_line(spec)}",
        f"parity      max |onnxruntime - torch| at batch {', '.join(map(str, parity.get('batch_sizes', [])))}: "
        + ", ".join(f"{k} {v:.1e}" for k, v in parity.get("max_abs_diff", {}).items())
        + f" (bound {parity.get('tolerance')})",
        f"ELBO parity -ELBO on {elbo.get('images')} test images, fixed eps: torch {elbo['neg_elbo_torch']:.4f}, "
        f"onnxruntime {elbo['neg_elbo_onnx']:.4f} nats/image" if elbo.get("neg_elbo_onnx") is not None else
        f"ELBO parity {elbo.get('note', 'not recorded')}",
        _diagnostics(spec.get("diagnostics")),
        f"noise       {spec['noise']['algorithm']} v{spec['noise']['version']}",
        f"pair_id     {spec['pair_id']}",
    ]
    for variant, entry in model.manifest["variants"].items():
        sizes = " + ".join(f"{entry[r]} {model.manifest['files'][entry[r]]['bytes']:,} B"
                           for r in ("encoder", "decoder"))
        quality = _variant_quality(entry.get("quality"))
        lines.append(f"variant     {variant}{' (loaded)' if variant == model.variant else ''}: {sizes}{quality}")
    for role, role_spec in model.specs.items():
        lines.append(f"ops         {role}: {', '.join(role_spec['ops'])}")
    return "\n".join(lines)


def _diagnostics(d: dict | None) -> str:
    """The latent check training stored (spec "diagnostics"): active units, KL, z's scale, any warning."""
    if not d:
        return "latent use  no diagnostics recorded"
    verdict = "COLLAPSED: " if d.get("collapsed") else ""
    return (f"latent use  {verdict}{d['active_units']} of {d['latent_dim']} units active, KL {d['kl']:.2f} nats/image, "
            f"z rms {d['latent_rms']:.2f} on {d['images']} validation images"
            + (f"; {d['note']}" if d.get("collapsed") or d.get("far_from_prior") else ""))


def _variant_quality(q: dict | None) -> str:
    """A variant's measured quality: PSNR of x_hat against the source, the -ELBO change, the verdict."""
    if not q:
        return ""
    if "checks" not in q:  # written before the bounds table (0.1 exports)
        return f"; PSNR {q['psnr_db']:.1f} dB"
    parts = [f"{c['check']} {c['metric']} {c['measured']:.3g}" for c in q["checks"]
             if c["check"] in ("x_hat", "-ELBO vs torch")]
    return "; " + ", ".join(parts) + ("" if q["passed"] else " (OUTSIDE its bounds)")


def _source_line(spec: dict) -> str:
    """What an imported model's spec says of its origin: kind, class, factory, hashes, latent scaling."""
    source = spec.get("source", {})
    parts = [f"{source.get('kind')}"] + [f"{k} {str(v)[:16] if k.endswith('sha256') else v}"
                                         for k, v in source.items() if k != "kind" and v is not None]
    scaling = spec.get("latent_scaling")
    if scaling:
        parts.append(f"latent_scaling x{scaling['scaling_factor']:g} shift {scaling.get('shift_factor', 0):g}")
    return ", ".join(parts)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# Stages that need the train extra: command -> (module whose main(argv) runs it, argv prefix, what it does).
STAGES = {
    "train": ("edgevae.train.__main__", [], "train a VAE on a dataset; write a run directory"),
    "export": ("edgevae.export.__main__", [], "export a run (or your own VAE) to two verified ONNX graphs"),
    "verify": ("edgevae.export.__main__", ["verify"], "check an export against the model it came from"),
    "evaluate": ("edgevae.train.evaluate", [], "score a run on its test set: -ELBO, importance-weighted NLL"),
    "report": ("edgevae.train.report", [], "draw a run's latent space, samples, manifold, interpolations"),
    "download": ("edgevae.train.download", [], "download and verify mnist or fashion-mnist"),
}
TRAIN_EXTRA = {"torch", "onnx", "onnxscript", "tqdm", "matplotlib"}  # what `pip install 'edgevae[train]'` adds


def _stage(command: str, argv: list[str]) -> int:
    """Run a training-side stage; without its dependencies, say how to install them."""
    import importlib

    module, prefix, _ = STAGES[command]
    try:
        return importlib.import_module(module).main(prefix + argv)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        print(f"error: `edgevae {command}` needs {e.name}, which is not installed: pip install torch==2.13.0 "
              f"(the CPU build, first), then pip install 'edgevae[train]'", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevae", description="Train, export and run VAEs as two ONNX graphs. "
                                     "`edgevae COMMAND --help` for one command's flags.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, help_text) in STAGES.items():  # listed for --help; main() hands them on before parsing
        sub.add_parser(name, help=help_text + " (train extra)", add_help=False)

    def command(name, run, help_text, out=None, seed=False, scale=True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("export_dir", help="directory written by `edgevae export`")
        p.add_argument("--threads", type=_positive, default=None, help="onnxruntime intra-op threads (default: cores)")
        p.add_argument("--variant", default="fp32", help="fp32 (default), int8 or fp16, if the export has it")
        if out:
            p.add_argument("--out", default=out, help=f"output path (default {out})")
        if seed:
            p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
            p.add_argument("--temperature", type=float, default=1.0, help="scale of eps (default 1.0)")
        if scale:
            p.add_argument("--scale", type=_positive, default=1, help="enlarge each pixel to scale x scale (default 1)")
            p.add_argument("--background", default=None,
                           help="RGBA models: preview on 'checkerboard' or a colour (black, white, #rrggbb) "
                                "instead of keeping the PNG's transparency")
        if name != "info":
            p.add_argument("--label", default=None, help="conditional models: the class, by name or index")
            p.add_argument("--tile", type=_positive, default=None,
                           help="tileable exports: decode/encode tile x tile latent cells at a time (less memory)")
            p.add_argument("--overlap", type=int, default=None, help="with --tile: overlap of tiles in latent "
                                                                      "cells, blended (default tile // 4)")
        p.set_defaults(run=run)
        return p

    p = command("sample", _sample, "decode N(0, I) samples into a PNG grid", "samples.png", seed=True)
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--nrow", type=_positive, default=None, help="images per grid row (default ceil(sqrt(n)))")

    p = command("encode", _encode, "encode image files to latents (.npy, plus .json with z, mu, logvar)",
                "latents.npy", seed=True, scale=False)
    p.add_argument("images", nargs="+", help="image files (resized and converted to the model's shape)")
    p.add_argument("--sampled", action="store_true", help="write sampled z to the .npy instead of mu")

    p = command("reconstruct", _reconstruct, "encode and decode image files; PNG with inputs above outputs",
                "reconstructions.png")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--sampled", action="store_true", help="decode a sampled z instead of mu")
    p.add_argument("--seed", type=int, default=0, help="noise seed with --sampled (default 0)")

    p = command("interpolate", _interpolate, "decode a path between two images or seeds into a PNG strip",
                "interpolation.png")
    p.add_argument("a", help="start: an image file, or seed:N for that seed's N(0, I) latent")
    p.add_argument("b", help="end: an image file, or seed:N")
    p.add_argument("--steps", type=int, default=10, help="images in the strip, ends included (default 10)")
    p.add_argument("--method", choices=METHODS, default="lerp", help="lerp or slerp (default lerp)")

    p = command("traverse", _traverse, "sweep latent dimensions one at a time (one row each)", "traversal.png")
    p.add_argument("--dims", type=lambda t: [int(v) for v in t.split(",")], default=None,
                   help="comma-separated dimensions (default: the first 8)")
    p.add_argument("--steps", type=int, default=9, help="values per dimension (default 9)")
    p.add_argument("--span", type=float, default=3.0, help="sweep from -span to +span (default 3.0)")

    p = command("manifold", _manifold, "decode a grid of normal quantiles of a 2-D latent", "manifold.png")
    p.add_argument("--steps", type=int, default=20, help="grid side (default 20)")

    p = command("info", _info, "print the spec, files, ops and parity of an export", scale=False)
    p.add_argument("--json", action="store_true", help="print both graphs' specs as JSON, by role")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in STAGES:
        return _stage(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        model = load(args.export_dir, threads=args.threads, variant=args.variant, tile=getattr(args, "tile", None),
                     overlap=getattr(args, "overlap", None))
        message = args.run(args, model)
    except EdgeVAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    if args.command == "sample":
        message += f", {(time.perf_counter() - start) * 1000:.0f} ms)"
    print(message)
    return 0
