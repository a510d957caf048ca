"""`edgevae train`: train a VAE and write a run directory.

    edgevae train --data shapes --model vae --arch mlp --latent-dim 16 --epochs 10 --out runs/shapes
    edgevae train --out runs/shapes --epochs 20 --resume          # the saved config, 10 more epochs
    torchrun --nproc_per_node=2 -m edgevae train --data shapes --out runs/ddp
"""
from __future__ import annotations

import argparse
import os
import sys

from edgevae.errors import argument_parser, one_line

from .config import TrainConfig, add_arguments, from_args


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(prog="edgevae train", description="Train a VAE; write a run directory.")
    add_arguments(parser, TrainConfig)
    args = parser.parse_args(argv)
    main_process = os.environ.get("RANK", "0") == "0"
    if args.resume:  # the checkpoint's config, with only the flags given here on top
        from .checkpoint import resume_config

        explicit = argparse.ArgumentParser(add_help=False)
        add_arguments(explicit, TrainConfig, suppress_defaults=True)
        try:
            config = resume_config(TrainConfig, args.out, vars(explicit.parse_args(argv)))
        except (ValueError, OSError) as e:  # no checkpoint, an unreadable one, a config that cannot resume
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
    else:
        try:
            config = from_args(args)
        except ValueError as e:
            parser.error(str(e))
    if main_process:
        print("config: " + " ".join(f"{k}={v}" for k, v in config.to_dict().items()))
    from .download import DownloadError
    from .loop import Interrupted, train

    try:
        train(config)
    except (ValueError, OSError, FloatingPointError, DownloadError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory (the data set, or a batch, does not fit; see --limit and --batch-size)",
              file=sys.stderr)
        return 2
    except Interrupted as e:
        if main_process:
            print(f"interrupted: {one_line(e)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted (aborted without saving)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
