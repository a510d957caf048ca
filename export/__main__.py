"""`edgevae export RUN_DIR --out EXPORT_DIR`, or any PyTorch VAE: `edgevae export --module|--antixk|--diffusers|...`.

    edgevae export runs/shapes --out exports/shapes [--force] [--int8] [--fp16]
    edgevae export --module my_vae.py:build [--weights FILE] --image-shape 3,64,64 --out exports/mine
    edgevae export --diffusers path/to/vae --out exports/sd-vae

`edgevae verify RUN_DIR EXPORT_DIR` (or `edgevae verify --diffusers DIR EXPORT_DIR`, the model given as at
export) checks an existing export against its model and prints a table; it exits 1 when a bound is broken.
"""
from __future__ import annotations

import argparse
import json
import sys

from edgevae.errors import argument_parser, one_line

SOURCES = ("module", "antixk", "diffusers", "pythae")


def _floats(text: str, count: int, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{flag} takes {count} comma-separated numbers, got {text!r}")
    return values


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    """How to name a model that `edgevae train` did not write (README "Export your own VAE")."""
    group = parser.add_argument_group("your own VAE (instead of RUN_DIR)")
    one = group.add_mutually_exclusive_group()
    one.add_argument("--module", metavar="FILE_OR_MODULE:FACTORY",
                     help="FACTORY() returns an nn.Module with encode(x) -> (mu, logvar) and decode(z) -> x")
    one.add_argument("--antixk", metavar="FILE_OR_MODULE:FACTORY",
                     help="an AntixK/PyTorch-VAE model class (encode -> [mu, log_var]; images in [-1, 1])")
    one.add_argument("--diffusers", metavar="DIR", help="an AutoencoderKL folder written by save_pretrained")
    one.add_argument("--pythae", metavar="DIR", help="a pythae VAE folder written by model.save")
    group.add_argument("--weights", help="--module/--antixk: a state dict (.safetensors, or torch file read with "
                                         "weights_only=True; Lightning's 'model.' prefix is dropped)")
    group.add_argument("--factory-args", default=None, metavar="JSON",
                       help="--module/--antixk: keyword arguments for FACTORY, as a JSON object")
    group.add_argument("--image-shape", metavar="C,H,W", help="--module/--antixk: the model's image shape "
                                                                "(--diffusers: default in_channels x sample_size^2)")
    group.add_argument("--native-range", metavar="LO,HI", default=None,
                       help="the model's pixel range (default 0,1 for --module, -1,1 for --antixk); folded into "
                            "the graphs so they take and give [0, 1]")
    group.add_argument("--prior", choices=("standard_normal", "none"), default="standard_normal",
                       help="--module/--antixk: standard_normal when decoding z ~ N(0, I) is meaningful (trained "
                            "with the KL to N(0, I)); none makes sample() refuse (default standard_normal)")
    group.add_argument("--prior-note", default=None, help="with --prior none: why, one line (goes in the spec)")
    group.add_argument("--no-tiling", action="store_true",
                       help="keep the spatial size fixed even for a spatial latent (default: dynamic h, w)")


def _source(args, parser):
    """The Source the flags name, or None for RUN_DIR."""
    from .adapters import SourceError
    from .importers import antixk_source, diffusers_source, module_source, pythae_source

    chosen = [k for k in SOURCES if getattr(args, k)]
    if not chosen:
        return None
    kind = chosen[0]
    shape = tuple(int(v) for v in _floats(args.image_shape, 3, "--image-shape")) if args.image_shape else None
    if kind in ("module", "antixk") and shape is None:
        raise SourceError(f"--{kind} needs --image-shape C,H,W")
    if kind in ("diffusers", "pythae") and (args.weights or args.factory_args):
        raise SourceError(f"--{kind} reads its weights and config from its folder; --weights/--factory-args are for "
                     f"--module and --antixk")
    if kind == "diffusers":
        return diffusers_source(args.diffusers, shape)
    if kind == "pythae":
        return pythae_source(args.pythae)
    try:
        factory_args = json.loads(args.factory_args) if args.factory_args else None
    except json.JSONDecodeError as e:
        raise SourceError(f"--factory-args must be a JSON object: {e}") from None
    if factory_args is not None and not isinstance(factory_args, dict):
        raise SourceError("--factory-args must be a JSON object")
    native = _floats(args.native_range, 2, "--native-range") if args.native_range else \
        ((-1.0, 1.0) if kind == "antixk" else (0.0, 1.0))
    prior = None if args.prior == "none" else args.prior
    note = args.prior_note or ("the exporter was told decoding z ~ N(0, I) is not meaningful for this model"
                               if prior is None else None)
    make = antixk_source if kind == "antixk" else module_source
    return make(getattr(args, kind), shape, weights=args.weights, factory_args=factory_args, native_range=native,
                prior=prior, prior_note=note, tileable=False if args.no_tiling else None)


def _export(argv) -> int:
    parser = argument_parser(prog="edgevae export",
                                     description="Export a trained run, or your own VAE, to two verified ONNX "
                                                 "graphs. (`edgevae verify` checks an export.)")
    parser.add_argument("run_dir", nargs="?", help="run directory written by `edgevae train`")
    parser.add_argument("--out", required=True, help="export directory to create")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--int8", action="store_true",
                        help="also write int8 graphs (static QDQ quantization calibrated on the run's images for "
                             "graphs with convolutions, dynamic for the others), if inside their gate (runs only)")
    parser.add_argument("--fp16", action="store_true", help="also write fp16-weight graphs, if inside their gate "
                                                            "(runs only)")
    parser.add_argument("--checkpoint", choices=("auto", "best", "last"), default="auto",
                        help="best.pt (lowest validation -ELBO) or checkpoint.pt (the last epoch); "
                             "auto: best when the run has one (default)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="imported models: the parity bound, max |onnxruntime - torch| (default: the family's)")
    _add_source_flags(parser)
    args = parser.parse_args(argv)
    chosen = tuple(v for v in ("int8", "fp16") if getattr(args, v))
    source = _source(args, parser)
    if (source is None) == (args.run_dir is None):
        parser.error("give RUN_DIR, or one of --module, --antixk, --diffusers, --pythae (not both)")
    if source is None:
        from .build import export

        export(args.run_dir, args.out, force=args.force, variants_=chosen, checkpoint=args.checkpoint)
        return 0
    if chosen:
        parser.error("--int8/--fp16 need a likelihood to gate them: only runs of `edgevae train` have one")
    from pathlib import Path

    from .api import describe
    from .build import write_export

    describe(source)
    write_export(source, Path(args.out), None, force=args.force, tolerance=args.tolerance)
    return 0


def _verify(argv) -> int:
    parser = argument_parser(prog="edgevae verify",
                                     description="Check an export against the model it came from: a run "
                                                 "(RUN_DIR EXPORT_DIR) or your own VAE, given as at export.")
    parser.add_argument("dirs", nargs="+", metavar="[RUN_DIR] EXPORT_DIR",
                        help="run directory written by `edgevae train` (not with --module ...), export directory")
    parser.add_argument("--batch-sizes", default=None,
                        help="comma-separated batch sizes (default 1,7,64,256; imported models 1,7,64, or 1 for "
                             "images beyond 64x64 pixels)")
    _add_source_flags(parser)
    args = parser.parse_args(argv)
    from .verify import format_table, verify_export

    sizes = None
    if args.batch_sizes is not None:
        try:
            sizes = tuple(int(v) for v in args.batch_sizes.split(","))
        except ValueError:
            sizes = ()
        if not sizes or min(sizes) < 1:
            parser.error(f"--batch-sizes must be comma-separated ints >= 1, got {args.batch_sizes!r}")
    source = _source(args, parser)
    if len(args.dirs) != (1 if source is not None else 2):
        parser.error("give RUN_DIR EXPORT_DIR, or --module/--antixk/--diffusers/--pythae ... EXPORT_DIR")
    if source is None:
        rows = verify_export(args.dirs[0], args.dirs[1], sizes or (1, 7, 64, 256))
    else:
        from .verify_source import verify_source

        rows = verify_source(source, args.dirs[0], sizes)
    print(format_table(rows))
    broken = [r for r in rows if not r.ok]
    if broken:
        print(f"error: {len(broken)} bound(s) broken: " + "; ".join(f"{r.variant} {r.check}" for r in broken),
              file=sys.stderr)
        return 1
    print(f"all {len(rows)} checks within bounds")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done; 1 a check failed (an export gate, a bound `verify` measures, the written files);
    2 bad input or usage (not a run directory, --out in the way, an unreadable export); one line on stderr."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        from edgevae import EdgeVAEError

        from .adapters import SourceError
        from .build import ExportError
        from .gates import ExportCheckError
    except ModuleNotFoundError as e:
        print(f"error: {e.name} is not installed; install the train extra: pip install 'edgevae[train]'",
              file=sys.stderr)
        return 2
    verify = argv[:1] == ["verify"]
    try:
        return _verify(argv[1:]) if verify else _export(argv)
    except ExportCheckError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except EdgeVAEError as e:  # export: the files as written do not load; verify: the export given does not
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2 if verify else 1
    except (ExportError, SourceError, ValueError, argparse.ArgumentTypeError) as e:  # the model named, --out: bad input
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable or impossible --out
        print(f"error: {one_line(e.filename or '')}: {one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the temporary directory is already gone (build.export's finally)
        print("interrupted: nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
