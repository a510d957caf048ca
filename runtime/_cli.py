"""`python -m runtime`: sample a PNG grid, or print what an export holds.

    python -m runtime sample exports/shapes --n 64 --seed 0 --out grid.png
    python -m runtime info exports/shapes

Bad input exits with status 2 and one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from ._images import save_grid
from ._model import load
from .errors import EdgeVAEError


def _sample(args) -> None:
    model = load(args.export_dir, threads=args.threads)
    start = time.perf_counter()
    images = model.sample(args.n, seed=args.seed, temperature=args.temperature)
    path = save_grid(images, args.out, nrow=args.nrow, scale=args.scale)
    print(f"wrote {path} ({args.n} samples, seed {args.seed}, temperature {args.temperature}, "
          f"{(time.perf_counter() - start) * 1000:.0f} ms)")


def _info(args) -> None:
    model = load(args.export_dir, threads=args.threads)
    if args.json:
        print(json.dumps(model.spec, indent=2, sort_keys=True))
        return
    spec = model.spec
    c, h, w = model.image_shape
    print(f"export      {model.path}")
    print(f"model       {spec['model']} ({spec.get('arch', '?')}), likelihood {spec['likelihood']}")
    print(f"image       {c}x{h}x{w}, pixels in {spec['pixel_range']}")
    print(f"latent dim  {model.latent_dim}")
    print(f"pair_id     {spec['pair_id']}")
    training = spec["training"]
    print(f"trained on  {training.get('dataset')}, {training.get('epochs')} epochs, "
          f"test -ELBO {training.get('test_neg_elbo'):.3f} nats/image")
    parity = spec["parity"]
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in parity.get("max_abs_diff", {}).items())
    print(f"parity      max |onnxruntime - torch| at batch {parity.get('batch_sizes')}: {diffs} "
          f"(bound {parity.get('tolerance')})")
    print(f"noise       {spec['noise']['algorithm']} v{spec['noise']['version']}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime", description="Run an exported EdgeVAE model.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="decode N(0, I) samples into a PNG grid")
    p.add_argument("export_dir", help="directory written by `python -m export`")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--seed", type=int, default=0, help="noise seed; the same seed gives the same PNG (default 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="scale of eps (default 1.0)")
    p.add_argument("--out", default="samples.png", help="PNG path (default samples.png)")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (default ceil(sqrt(n)))")
    p.add_argument("--scale", type=int, default=1, help="enlarge each pixel to scale x scale (default 1)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: cores)")
    p.set_defaults(run=_sample)

    p = sub.add_parser("info", help="print the spec carried by an export's graphs")
    p.add_argument("export_dir", help="directory written by `python -m export`")
    p.add_argument("--json", action="store_true", help="print the whole spec as JSON")
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except EdgeVAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0
