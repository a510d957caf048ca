"""`edgevae export RUN_DIR --out EXPORT_DIR [--force] [--int8] [--fp16]`.

`edgevae verify RUN_DIR EXPORT_DIR` checks an existing export against its checkpoint and
prints a table of the measured differences; it exits 1 when a bound is broken.
"""
from __future__ import annotations

import sys

from edgevae.errors import argument_parser


def _export(argv) -> int:
    parser = argument_parser(prog="edgevae export",
                                     description="Export a trained run to two verified ONNX graphs. "
                                                 "(`edgevae verify RUN_DIR EXPORT_DIR` checks an export.)")
    parser.add_argument("run_dir", help="run directory written by `edgevae train`")
    parser.add_argument("--out", required=True, help="export directory to create")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--int8", action="store_true",
                        help="also write int8 graphs (dynamic quantization), if inside their gate")
    parser.add_argument("--fp16", action="store_true", help="also write fp16-weight graphs, if inside their gate")
    parser.add_argument("--checkpoint", choices=("auto", "best", "last"), default="auto",
                        help="best.pt (lowest validation -ELBO) or checkpoint.pt (the last epoch); "
                             "auto: best when the run has one (default)")
    args = parser.parse_args(argv)
    from .build import export

    chosen = tuple(v for v in ("int8", "fp16") if getattr(args, v))
    export(args.run_dir, args.out, force=args.force, variants_=chosen, checkpoint=args.checkpoint)
    return 0


def _verify(argv) -> int:
    parser = argument_parser(prog="edgevae verify",
                                     description="Check an export against the checkpoint it came from.")
    parser.add_argument("run_dir", help="run directory written by `edgevae train`")
    parser.add_argument("export_dir", help="export directory written by `edgevae export`")
    parser.add_argument("--batch-sizes", default="1,7,64,256", help="comma-separated batch sizes (default 1,7,64,256)")
    args = parser.parse_args(argv)
    from .verify import format_table, verify_export

    try:
        sizes = tuple(int(v) for v in args.batch_sizes.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        parser.error(f"--batch-sizes must be comma-separated ints >= 1, got {args.batch_sizes!r}")
    rows = verify_export(args.run_dir, args.export_dir, sizes)
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
        from edgevae.errors import one_line

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
    except (ExportError, ValueError) as e:
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
