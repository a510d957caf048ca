"""`python -m train`: train a VAE and write a run directory (console script: edgevae-train).

    python -m train --data shapes --model vae --arch mlp --latent-dim 16 --epochs 10 --out runs/shapes
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from .config import TrainConfig, add_arguments, from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description="Train a VAE; write a run directory.")
    add_arguments(parser, TrainConfig)
    args = parser.parse_args(argv)
    try:
        config = from_args(args)
    except ValueError as e:
        parser.error(str(e))
    print("config: " + " ".join(f"{k}={v}" for k, v in dataclasses.asdict(config).items()))
    from .loop import train

    try:
        train(config)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
