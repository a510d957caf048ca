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

Exit status, for every command: 0 done; 2 bad input or usage (one line on stderr, never a traceback);
1 a check failed (an export gate, `verify`, a parity bound); 130 interrupted (Ctrl-C), one line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ._images import MAX_IMAGE_PIXELS, save_grid
from ._latent import METHODS
from ._model import load
from .errors import EdgeVAEError, argument_parser, one_line
from .noise import standard_normal

MAX_DIMS = 64  # latent dimensions `traverse` sweeps in one grid
_PADDING = 2  # make_grid's black border around and between images


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


def _check_grid(model, n: int, nrow: int | None, scale: int) -> None:
    """Refuse, before any work, a grid of n images that save_grid would refuse (make_grid's layout, its limit)."""
    _, h, w = model.image_shape
    n, scale = max(n, 1), max(scale, 1)  # bad counts are the model's to refuse, with their own message
    cols = min(max(nrow, 1), n) if nrow is not None else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pixels = (rows * (h + _PADDING) + _PADDING) * (cols * (w + _PADDING) + _PADDING) * scale * scale
    if pixels > MAX_IMAGE_PIXELS:
        raise EdgeVAEError(f"the grid of {n:,} images ({rows:,} x {cols:,}, scale {scale}) would have {pixels:,} "
                           f"pixels, more than {MAX_IMAGE_PIXELS:,}; use fewer images, a smaller --scale or --nrow")


def _sample(args, model) -> str:
    if args.nrow is not None and args.nrow > max(args.n, 1):
        raise EdgeVAEError(f"--nrow {args.nrow} is more than the {args.n} images")
    _check_grid(model, args.n, args.nrow, args.scale)
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


RECON_COLUMNS = 8  # images per row of `reconstruct`'s grid: a row of inputs, their reconstructions below, ...


def _reconstruct(args, model) -> str:
    n = len(args.images)
    cols = min(n, RECON_COLUMNS)
    pairs = math.ceil(n / cols)
    _check_grid(model, 2 * pairs * cols, cols, args.scale)
    x = _images(args.images, model)
    recon = model.reconstruct(x, sampled=args.sampled, seed=args.seed if args.sampled else None,
                              labels=_label(args, model))
    blank = np.zeros((pairs * cols - n, *x.shape[1:]), x.dtype)  # the last row's empty cells (transparent for RGBA)
    x, recon = np.concatenate([x, blank]), np.concatenate([recon, blank])
    rows = [part[i:i + cols] for i in range(0, n, cols) for part in (x, recon)]
    path = save_grid(np.concatenate(rows), args.out, nrow=cols, scale=args.scale, background=args.background)
    return (f"wrote {path} ({n} inputs, {cols} a row, each row of inputs above its reconstructions)" if pairs > 1
            else f"wrote {path} (top row: {n} inputs, bottom row: reconstructions)")


def _images(paths, model) -> np.ndarray:
    """The files as the model's input, prepared as its spec says; what was done is said on stderr."""
    notes: list[str] = []
    with _decoders_quiet():
        x = model.load_images(paths, notes=notes)
    for line in notes:
        print(f"note: {line} (the model's preprocessing: {_describe(model.preprocessing)})", file=sys.stderr)
    return x


@contextlib.contextmanager
def _decoders_quiet():
    """Image decoders in C (libtiff) print about damaged files on stderr themselves; while they run, stderr goes
    to /dev/null: the file then loads, or is refused in one line, either way."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _describe(pre: dict) -> str:
    alpha = {"keep": "alpha kept", "clear": "alpha kept, invisible colour set to 0"}.get(pre["alpha"],
                                                                                     f"alpha onto {pre['matte']}")
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
    _check_grid(model, args.steps, args.steps, args.scale)
    images = model.interpolate(_endpoint(args.a, model), _endpoint(args.b, model), args.steps, args.method,
                               labels=_label(args, model))
    path = save_grid(images, args.out, nrow=args.steps, scale=args.scale, background=args.background)
    return f"wrote {path} ({args.steps} steps, {args.method}, {args.a} -> {args.b})"


def _traverse(args, model) -> str:
    dims = range(min(model.latent_dim, 8)) if args.dims is None else args.dims
    if len(dims) > MAX_DIMS:
        raise EdgeVAEError(f"--dims lists {len(dims)} dimensions; at most {MAX_DIMS} per grid")
    _check_grid(model, len(dims) * max(args.steps, 1), max(args.steps, 1), args.scale)
    rows = [model.traverse(d, steps=args.steps, span=args.span, labels=_label(args, model)) for d in dims]
    path = save_grid(np.concatenate(rows), args.out, nrow=args.steps, scale=args.scale, background=args.background)
    return f"wrote {path} (dims {', '.join(map(str, dims))}, {args.steps} steps in [-{args.span}, {args.span}])"


def _manifold(args, model) -> str:
    _check_grid(model, args.steps * args.steps, args.steps, args.scale)
    images = model.manifold(args.steps, labels=_label(args, model))
    path = save_grid(images, args.out, nrow=args.steps, scale=args.scale, background=args.background)
    return f"wrote {path} ({args.steps}x{args.steps} normal quantiles of the 2-D latent)"


def _fmt(value, spec: str = "") -> str:
    """A spec's informational value for `info`: a number formatted, anything else shown short, never an error."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            pass
    text = "?" if value is None else one_line(value if isinstance(value, str) else json.dumps(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _note(value, limit: int = 240) -> str:
    """A spec's free-text note for `info`: one line, cut at a word past `limit` characters (the spec is untrusted)."""
    text = one_line(value if isinstance(value, str) else json.dumps(value))
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value, limit: int = 20) -> str:
    items = value if isinstance(value, list) else [value]
    shown = ", ".join(_fmt(v) for v in items[:limit])
    return shown + (f", ... ({len(items):,} in all)" if len(items) > limit else "")


def _info(args, model) -> str:
    spec = model.spec
    if args.json:
        return json.dumps(model.specs, indent=2, sort_keys=True)
    c, h, w = model.image_shape
    training, parity = _dict(spec["training"]), _dict(spec["parity"])
    elbo = _dict(parity.get("elbo"))
    diffs = _dict(parity.get("max_abs_diff"))
    lines = [
        f"export      {model.path}",
        f"model       {spec['model']} ({_fmt(spec.get('arch') or _dict(spec.get('source')).get('kind'))}), "
        f"likelihood {_fmt(spec['likelihood']) if spec['likelihood'] else 'not recorded (imported)'}",
        f"image       {c}x{h}x{w} ({model.image_mode}), pixels in [0, 1]"
        + (f" (the model's own range {_fmt(spec['native_range'])} is folded into the graphs)"
           if spec.get("native_range", [0.0, 1.0]) != [0.0, 1.0] else ""),
        f"latent      {'x'.join(map(str, model.latent_shape))}"
        + ("" if len(model.latent_shape) == 1 else f" (spatial, {model.latent_dim} values)")
        + ("" if model.prior else "; no prior: sample is refused, encode/decode work")
        + (f"; tileable, {spec['latent_scale']} px per latent cell" if spec.get("tileable") else "")
        + "".join(f"; tiled {role} of {len(spec[f'tiled_{role}']['units'])} units (exact)"
                  for role in ("decoder", "encoder") if spec.get(f"tiled_{role}")),
        f"classes     {_list(spec['classes']) if spec['classes'] else 'none (unconditional)'}",
        f"trained on  {_fmt(training.get('dataset'))}, {_fmt(training.get('checkpoint', 'checkpoint'))} of epoch "
        f"{_fmt(training.get('epochs'))}, test -ELBO {_fmt(training.get('test_neg_elbo'), '.3f')} nats/image at that "
        f"epoch" + (" (before the prior fit; `edgevae evaluate` measures the model as exported)"
                    if spec.get("prior_fit") else "") if training else
        f"imported    {one_line(_source_line(spec))}",
        f"parity      max |onnxruntime - torch| at batch {_list(parity.get('batch_sizes'))}: "
        + ", ".join(f"{_fmt(k)} {_fmt(v, '.1e')}" for k, v in list(diffs.items())[:8])
        + f" (bound {_fmt(parity.get('tolerance'))}"
        + (" x max(1, max |torch|): " + ", ".join(f"{_fmt(k)} {_fmt(v, '.3g')}" for k, v in
                                                 list(_dict(parity.get("scale")).items())[:8])
           if parity.get("scale") else "") + ")",
        f"ELBO parity -ELBO on {_fmt(elbo.get('images'))} test images, fixed eps: torch "
        f"{_fmt(elbo.get('neg_elbo_torch'), '.4f')}, onnxruntime {_fmt(elbo.get('neg_elbo_onnx'), '.4f')} nats/image"
        if elbo.get("neg_elbo_onnx") is not None else f"ELBO parity {_note(elbo.get('note', 'not recorded'))}",
        _diagnostics(_dict(spec.get("diagnostics")), fitted=bool(spec.get("prior_fit"))),
        *([f"prior       {_note(_dict(spec['prior_fit']).get('note', '?'))}"]
          if spec.get("prior_fit") else []),
        f"noise       {spec['noise']['algorithm']} v{spec['noise']['version']}",
        f"pair_id     {spec['pair_id']}",
        f"manifest    sha256 {model.manifest_sha256} (pin it: --expect, or load(..., expect_sha256=...))",
    ]
    for variant, entry in model.manifest["variants"].items():
        sizes = " + ".join(f"{entry[r]} {model.manifest['files'][entry[r]]['bytes']:,} B"
                           for r in ("encoder", "decoder"))
        quality = _variant_quality(_dict(entry.get("quality")))
        lines.append(f"variant     {variant}{' (loaded)' if variant == model.variant else ''}: {sizes}{quality}")
    for role, role_spec in model.specs.items():
        lines.append(f"ops         {role}: {_list(role_spec['ops'], 64)}")
    return "\n".join(lines)


def _diagnostics(d: dict, fitted: bool = False) -> str:
    """The latent check training stored (spec "diagnostics"): active units, KL, z's scale, any warning (none
    for latents far from N(0, I) when a fitted prior brings the samples to them)."""
    if not d:
        return "latent use  no diagnostics recorded"
    verdict = "COLLAPSED: " if d.get("collapsed") is True else ""
    return (f"latent use  {verdict}{_fmt(d.get('active_units'))} of {_fmt(d.get('latent_dim'))} units active, "
            f"KL {_fmt(d.get('kl'), '.2f')} nats/image, z rms {_fmt(d.get('latent_rms'), '.2f')} on "
            f"{_fmt(d.get('images'))} validation images"
            + (f"; {_fmt(d.get('note'))}" if d.get("collapsed") is True
               or (d.get("far_from_prior") is True and not fitted) else ""))


def _variant_quality(q: dict) -> str:
    """A variant's measured quality: PSNR of x_hat against the source, the -ELBO change, the verdict."""
    if not q:
        return ""
    if "checks" not in q:  # written before the bounds table (0.1 exports)
        return f"; PSNR {_fmt(q.get('psnr_db'), '.1f')} dB" + (
            f", -ELBO {_fmt(q.get('neg_elbo'), '.3f')} vs fp32 {_fmt(q.get('neg_elbo_fp32'), '.3f')}"
            if q.get("neg_elbo") is not None else "")
    checks = [_dict(c) for c in q["checks"]] if isinstance(q["checks"], list) else []
    parts = [f"{_fmt(c.get('check'))} {_fmt(c.get('metric'))} {_fmt(c.get('measured'), '.3g')}" for c in checks
             if c.get("check") in ("x_hat", "-ELBO vs torch")]
    return ("; " + ", ".join(parts[:8]) + ("" if q.get("passed") is not False else " (OUTSIDE its bounds)")
            + (f"; {_note(q['layout'])}" if q.get("layout") else ""))


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


def _out_path(text: str) -> str:
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError(f"must be a file path, got {text!r}")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file path")
    return text


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
    parser = argument_parser(prog="edgevae", description="Train, export and run VAEs as two ONNX graphs. "
                                     "`edgevae COMMAND --help` for one command's flags.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, help_text) in STAGES.items():  # listed for --help; main() hands them on before parsing
        sub.add_parser(name, help=help_text + " (train extra)", add_help=False)

    def command(name, run, help_text, out=None, seed=False, scale=True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("export_dir", help="directory written by `edgevae export`")
        p.add_argument("--threads", type=_positive, default=None, help="onnxruntime intra-op threads (default: cores)")
        p.add_argument("--variant", default="fp32", help="fp32 (default), int8 or fp16, if the export has it")
        p.add_argument("--expect", default=None, metavar="SHA256",
                       help="refuse any export whose manifest.json does not have this sha256 (`info` prints it)")
        if out:
            p.add_argument("--out", type=_out_path, default=out, help=f"output path (default {out})")
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
            p.add_argument("--overlap", type=int, default=None,
                           help="with --tile: overlap of blended tiles in latent cells (default tile // 4); an "
                                "export with a tiled decoder and encoder (diffusers) tiles exactly, without it")
            p.add_argument("--low-memory", action="store_true",
                           help="with --tile and a tiled decoder/encoder: hold one unit's weights at a time "
                                "(sessions built as each unit runs; slower)")
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
    """Run one command; whatever happens, the process ends with one line on stderr and the documented status."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edgevae info | head -1`: the reader left; say nothing more
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the last line of defence: never a traceback
        if os.environ.get("EDGEVAE_DEBUG"):
            raise
        print(f"error: unexpected {type(e).__name__}: {one_line(e)} (EDGEVAE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    if argv and argv[0] in STAGES:
        return _stage(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    # Pillow warns about damaged files (TIFF tags, EXIF, its own size limit) before the file is read or
    # refused; here that is said in one line either way.
    warnings.filterwarnings("ignore", module="PIL")
    start = time.perf_counter()
    try:
        model = load(args.export_dir, threads=args.threads, variant=args.variant, expect_sha256=args.expect,
                     tile=getattr(args, "tile", None), overlap=getattr(args, "overlap", None),
                     low_memory=getattr(args, "low_memory", False))
        message = args.run(args, model)
    except (EdgeVAEError, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {one_line(e.filename or '')}: {one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    if args.command == "sample":
        message += f", {(time.perf_counter() - start) * 1000:.0f} ms)"
    print(message)
    return 0
