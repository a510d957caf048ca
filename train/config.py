"""TrainConfig: everything a training run needs, one field per line; the CLI flags are generated from it.

The resolved config is printed once, saved in the run directory and in the checkpoint, and travels
from there into the exported graphs' spec.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field


def arg(default, help: str, choices: tuple | None = None):
    """A config field with its --help text (and allowed values) for the generated CLI."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    data: str = arg("shapes", "'shapes' (built in, generated) or an IDX directory (MNIST format, .gz or raw)")
    out: str = arg("runs/vae", "run directory: checkpoint, metrics.jsonl, sample grids")
    model: str = arg("vae", "model kind", ("vae",))
    arch: str = arg("mlp", "network architecture", ("mlp",))
    likelihood: str = arg("bernoulli", "p(x|z): Bernoulli on pixels in [0, 1]", ("bernoulli",))
    latent_dim: int = arg(16, "size D of the latent z")
    hidden: tuple[int, ...] = arg((512, 256), "hidden layer widths of the encoder body, comma-separated; decoder mirrors")
    epochs: int = arg(10, "passes over the training set")
    batch_size: int = arg(128, "images per optimizer step")
    lr: float = arg(1e-3, "Adam learning rate")
    beta: float = arg(1.0, "weight of the KL term (1 = the ELBO)")
    seed: int = arg(0, "seed for weights, batching, noise and generated data")
    image_size: int = arg(28, "side of generated 'shapes' images")
    num_train: int = arg(20_000, "'shapes': images generated for training")
    num_test: int = arg(2_000, "'shapes': images generated for testing")
    limit: int = arg(0, "use at most this many training images (0 = all)")
    device: str = arg("auto", "torch device: auto (CUDA when present), cpu, cuda, cuda:1 ...")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}, "
                                 f"got {getattr(self, f.name)!r}")
        positive = ("latent_dim", "epochs", "batch_size", "image_size", "num_train", "num_test")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"--hidden must be positive widths like 512,256, got {self.hidden}")
        if self.lr <= 0 or self.beta < 0 or self.limit < 0:
            raise ValueError(f"need lr > 0, beta >= 0, limit >= 0; got lr={self.lr}, beta={self.beta}, limit={self.limit}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Rebuild from a saved dict (checkpoint['config']); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}")
        values = dict(values)
        if "hidden" in values:
            values["hidden"] = tuple(values["hidden"])
        return cls(**values)


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 512,256, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser, config_cls=TrainConfig) -> None:
    """One --flag per dataclass field, typed from its annotation, with its help and choices."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default if not isinstance(f.default, tuple) else ','.join(map(str, f.default))})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        elif kind == tuple[int, ...]:
            parser.add_argument(flag, type=_int_tuple, default=f.default, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=f.default, choices=f.metadata["choices"], help=help_text)


def from_args(args: argparse.Namespace, config_cls=TrainConfig):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})
