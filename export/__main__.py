"""`python -m export RUN_DIR --out EXPORT_DIR [--force]` (console script: edgevae-export)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export",
                                     description="Export a trained run to two verified ONNX graphs.")
    parser.add_argument("run_dir", help="run directory written by `python -m train`")
    parser.add_argument("--out", required=True, help="export directory to create")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--int8", action="store_true", help="also write int8 graphs (dynamic quantization), if inside their gate")
    parser.add_argument("--fp16", action="store_true", help="also write fp16-weight graphs, if inside their gate")
    args = parser.parse_args(argv)
    try:
        from .build import ExportError, export
        from .verify import ExportCheckError
    except ModuleNotFoundError as e:
        print(f"error: {e.name} is not installed; install the export extra: pip install 'edgevae[train]'",
              file=sys.stderr)
        return 2
    from runtime import EdgeVAEError

    try:
        chosen = tuple(v for v in ("int8", "fp16") if getattr(args, v))
        export(args.run_dir, args.out, force=args.force, variants_=chosen)
    except (ExportError, ExportCheckError, EdgeVAEError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
