"""TrainConfig: everything a training run needs, one field per line; the CLI flags are generated from it.

The resolved config is printed once, saved in the run directory and in the checkpoint, and travels
from there into the exported graphs' spec.

    edgevae train --help        # one flag per field below
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field

from edgevae._images import parse_colour
from edgevae.errors import argument_parser, one_line
from edgevae.spec import MAX_SIDE


def arg(default, help: str, choices: tuple | None = None, summary: bool = False):
    """A config field with its --help text (and allowed values) for the generated CLI.

    summary: the field describes the model and travels into the exported graphs' spec (TrainConfig.summary).
    Only such fields do: nothing local -- paths, devices -- leaves the machine inside a graph.
    """
    return field(default=default, metadata={"help": help, "choices": choices, "summary": summary})


DEFAULT_EPOCHS = 10  # --epochs 0 without --minutes
# Upper bounds of the size fields (a run holds its data and model in memory).
UPPER = {"latent_dim": 1 << 16, "epochs": 1 << 20, "batch_size": 1 << 16, "num_train": 1 << 24, "num_test": 1 << 24,
         "iwae_k": 1 << 12, "kl_warmup": 1 << 20, "limit": 1 << 31, "latent_channels": 1 << 12, "blocks": 64}
BUDGET_EPOCHS = UPPER["epochs"]  # --epochs 0 with --minutes: no cap but the budget
MAX_LAYERS, MAX_WIDTH = 16, 1 << 14  # --hidden, --conv-channels and --widths
MAX_FIRST_LAYER = 1 << 27  # weights of an MLP's first layer, 4 channels assumed (512 MiB of float32)
MAX_GENERATED_PIXELS = 1 << 30  # 'shapes' images x pixels generated (1 GiB of uint8)
SHAPES_SIZE = 28  # --data shapes with --image-size auto


@dataclass(frozen=True)
class TrainConfig:
    data: str = arg("shapes", "'shapes' (generated), 'mnist' or 'fashion-mnist' (downloaded into --data-root), "
                              "an IDX directory, an image folder (sub-folders = classes), or an .npz/.npy file")
    data_root: str = arg("data", "where 'mnist' and 'fashion-mnist' are downloaded to and looked for")
    mirror: str = arg("", "base URL to download 'mnist'/'fashion-mnist' from instead of their canonical locations")
    out: str = arg("runs/vae", "run directory: checkpoints, metrics.jsonl, sample and reconstruction grids, loss.png")
    model: str = arg("vae", "vae, or ae: the plain autoencoder baseline on the same networks (no sampling, no KL)",
                     ("vae", "ae"), summary=True)
    arch: str = arg("auto", "network: auto (by the data: mlp for binary-like grey images, resnet otherwise), mlp, "
                            "conv (stride-2 convs, transposed-conv decoder) or resnet (residual SiLU blocks, "
                            "nearest-neighbour upsampling)", ("auto", "mlp", "conv", "resnet"), summary=True)
    conditional: bool = arg(False, "condition encoder and decoder on the class label (one-hot)", summary=True)
    likelihood: str = arg("auto", "p(x|z): auto (by the data: bernoulli for binary-like grey images, logistic "
                                  "otherwise), bernoulli (binary-like data), continuous-bernoulli, gaussian "
                                  "(calibrated sigma) or logistic (discretized, 256 levels, for 8-bit grey/colour)",
                          ("auto", "bernoulli", "continuous-bernoulli", "gaussian", "logistic"), summary=True)
    binarize: bool = arg(False, "'bernoulli': dynamic binarization, a fresh binary sample of each image every step",
                         summary=True)
    augment: str = arg("auto", "training batches only: flip (each image mirrored left-right with probability 1/2), "
                               "none, or auto = by the data: flip for colour and grey-level images, none for "
                               "binary-like ones (digits: a mirrored digit is not one)", ("auto", "flip", "none"),
                       summary=True)
    sigma: float = arg(0.0, "'gaussian': fixed std of p(x|z) per pixel; 0 = fitted per channel (--sigma-fit)",
                       summary=True)
    sigma_fit: str = arg("optimal", "'gaussian' with --sigma 0: optimal (sigma^2 = the batch's MSE per channel, a "
                                    "running average for evaluation and export) or learned (a trained parameter)",
                         ("optimal", "learned"), summary=True)
    gaussian_mean: str = arg("linear", "'gaussian': the mean image from the decoder's output: linear (output + 0.5, "
                                       "clipped to [0, 1]; trained on the unclipped value, a bound on the clipped "
                                       "model's NLL) or sigmoid (runs saved before linear existed; saturates where "
                                       "most pixels are exactly 0 or 1, as on transparent backgrounds)",
                             ("linear", "sigmoid"), summary=True)
    latent_dim: int = arg(0, "size D of a flat latent z; 0 = by the data: 16 for binary-like grey images, "
                             "128 for colour with --arch mlp or conv", summary=True)
    latent_channels: int = arg(0, "'resnet': C > 0 = a latent of C x h x w on the coarsest grid (the image's size "
                                  "halved once per level after the first); 0 = by the data: 2 for colour and grey "
                                  "levels (unless --latent-dim is given)", summary=True)
    hidden: tuple[int, ...] = arg((512, 256), "'mlp': hidden layer widths of the encoder, comma-separated; "
                                              "the decoder mirrors them", summary=True)
    conv_channels: tuple[int, ...] = arg((32, 64), "'conv': channels of the stride-2 conv layers, comma-separated; "
                                                   "the decoder mirrors them with kernel-4 stride-2 transposed convs",
                                                   summary=True)
    widths: tuple[int, ...] = arg((), "'resnet': channels per level, finest first, comma-separated (each level "
                                      "after the first halves the image); empty = by image size (16 doubling per "
                                      "level to a 4-8 pixel grid, at most 256)", summary=True)
    blocks: int = arg(1, "'resnet': residual blocks per level, in the encoder and in the decoder", summary=True)
    norm: str = arg("none", "'resnet': normalization in its blocks: none (residual branches start at zero) or group "
                            "(GroupNorm: it divides away each image's own colour levels, which then train slowly; "
                            "train/resnet.py)", ("none", "group"), summary=True)
    epochs: int = arg(0, "passes over the training set (with --resume: the new total); 0 = 10, or with --minutes as "
                         "many as the budget allows", summary=True)
    batch_size: int = arg(0, "images per optimizer step (summed over all processes under torchrun); 0 = by the "
                             "data: 128 for binary-like grey images, 32 otherwise", summary=True)
    lr: float = arg(0.0, "Adam learning rate; 0 = by the data: 1e-3 for binary-like grey images, 2e-3 otherwise",
                    summary=True)
    schedule: str = arg("auto", "learning rate: constant, or cosine decay to 0 over --epochs (over the time budget "
                                "with --minutes); auto = by the data: constant for binary-like grey images, cosine "
                                "otherwise", ("auto", "constant", "cosine"), summary=True)
    grad_clip: float = arg(-1.0, "clip the gradient's global L2 norm to this (0 = off); -1 = by the data: 1 for colour "
                                 "or grey-level images, off for binary-like ones", summary=True)
    beta: float = arg(1.0, "weight of the KL term (1 = the ELBO)", summary=True)
    kl_warmup: int = arg(-1, "epochs over which the KL weight ramps linearly from 0 to --beta (0 = off); -1 = by the "
                             "data: 5 for colour or grey-level images, 0 for binary-like ones and for --iwae-k > 1",
                         summary=True)
    free_bits: float = arg(0.0, "nats per latent dimension: a dimension's batch-mean KL below this is not penalised "
                                "(Kingma et al. 2016), against posterior collapse (0 = off; the reported -ELBO is "
                                "always the plain one)", summary=True)
    prior_fit: str = arg("auto", "after training, fit a density to the training images' latents and fold it into "
                                 "the model (z = m + L u, u ~ N(0, I)), so that samples come from where the images' "
                                 "latents are (train/prior.py); reconstructions are unchanged. mixture (of Gaussians, "
                                 "one per cluster of the latents), gaussian (one; one per class for --conditional), "
                                 "none, or auto (by the data: mixture for colour or grey-level images, gaussian if "
                                 "--conditional, none for binary-like ones and for a --latent-channels given); VAEs "
                                 "only", ("auto", "gaussian", "mixture", "none"),
                         summary=True)
    eval_every: int = arg(1, "evaluate and save the checkpoints every N epochs (and after the last), and draw the "
                             "grids at the first such epoch of each 1 (to 10), 10 (to 100) or 100 epochs")
    patience: int = arg(-1, "stop early when the validation -ELBO stops improving: N evaluations in a row without a "
                            "new lowest; -1 (auto): once it has given back more than a tenth of its fall for 3 "
                            "evaluations and the run has gone on past its lowest for as many epochs as it took to "
                            "reach it; 0: never")
    minutes: float = arg(0.0, "wall-clock training budget (0 = none): training stops at the first step past it, that "
                              "epoch is evaluated and saved, and --schedule cosine runs over the budget", summary=True)
    iwae_k: int = arg(1, "importance samples per image; k > 1 trains on the IWAE bound (Burda et al., 2016)",
                      summary=True)
    seed: int = arg(0, "seed for weights, batching, noise and generated data", summary=True)
    image_size: str = arg("auto", "the model's image size: N (square) or HxW, height x width as in the image shape "
                                  "[C, H, W], e.g. 56x68; 'shapes' are generated at it, other sources fitted to it "
                                  "(--fit); auto: the images' own size (a folder's most common one, or the median "
                                  "height and width when no size is shared by half of them; 28 for shapes), scaled "
                                  "to at most 128 on its longer side", summary=True)
    channels: int = arg(0, "image channels: 1 (L, greyscale), 3 (RGB) or 4 (RGBA: alpha kept as a channel); 0 = from "
                           "the data: 4 if any image has transparency (and --alpha is not matte), else 3 if any has "
                           "colour, else 1", (0, 1, 3, 4), summary=True)
    alpha: str = arg("auto", "transparency: clear (a 4th channel the model learns; the colour of fully transparent "
                             "pixels, which no one sees, set to 0), keep (the same, colour as stored), matte "
                             "(composited onto --matte), or auto (clear when the data has any)",
                     ("auto", "clear", "keep", "matte"), summary=True)
    matte: str = arg("black", "the colour transparent pixels are composited onto, and --fit pad's border colour: "
                              "black, white, grey or #rrggbb", summary=True)
    fit: str = arg("crop", "how images of another size or aspect become --image-size: crop (centre, keeps the "
                           "aspect, loses edges), pad (letterbox, keeps everything) or stretch",
                   ("crop", "pad", "stretch"), summary=True)
    resample: str = arg("lanczos", "Pillow filter for resizing", ("nearest", "box", "bilinear", "hamming", "bicubic",
                                                                  "lanczos"), summary=True)
    layout: str = arg("auto", "image folders: classes (each sub-folder a class; loose images at the top form one "
                              "more class), flat (every image, one class), or auto (classes when there are "
                              "sub-folders with images)", ("auto", "classes", "flat"))
    num_train: int = arg(20_000, "'shapes': images generated for training")
    num_test: int = arg(2_000, "'shapes': images generated for testing")
    val_fraction: float = arg(0.1, "fraction of the training images held out for validation (picks best.pt)",
                              summary=True)
    test_fraction: float = arg(0.1, "sources without a test split (folders, single arrays): fraction held out as test",
                               summary=True)
    limit: int = arg(0, "use at most this many training images, before the validation split (0 = all)", summary=True)
    device: str = arg("auto", "torch device: auto (CUDA when present), cpu, cuda, cuda:1 ...")
    precision: str = arg("auto", "training steps' arithmetic, --arch resnet: bfloat16 runs the convolutions in "
                                 "bfloat16 (the weights, the latent heads, the output layer, the loss and every "
                                 "evaluation stay float32), float32, or auto (bfloat16 for --arch resnet on a CPU "
                                 "with bfloat16 instructions: 1.5x the images per second there)",
                         ("auto", "float32", "bfloat16"))
    resume: bool = arg(False, "continue the run in --out from its checkpoint.pt, exactly where it stopped")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"--{_flag(f.name)} must be one of {', '.join(map(str, choices))}, "
                                 f"got {getattr(self, f.name)!r}")
        if self.epochs == 0:  # the budget decides when there is one: a 10-epoch cap would end a 20-minute run early
            object.__setattr__(self, "epochs", BUDGET_EPOCHS if self.minutes else DEFAULT_EPOCHS)
        elif self.epochs == BUDGET_EPOCHS and not self.minutes:  # e.g. --resume --minutes 0 of a budget run
            raise ValueError("--epochs: this run trains to a --minutes budget, not an epoch count; give --minutes M "
                             "or --epochs N")
        object.__setattr__(self, "image_size", str(self.image_size))  # 28 (an int, as older configs hold it) -> "28"
        if self.image_size != "auto":
            self.image_hw  # noqa: B018 -- parses --image-size now, so a bad value is a usage error
        try:
            parse_colour(self.matte)
        except ValueError as e:
            raise ValueError(f"--matte: {e}") from None
        positive = ("epochs", "num_train", "num_test", "iwae_k", "blocks", "eval_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("hidden", "conv_channels", "widths"):
            value = getattr(self, name)
            if (not value and name != "widths") or (value and min(value) < 1):
                raise ValueError(f"--{_flag(name)} must be positive widths like 64,32, got {value}")
        nonnegative = ("batch_size", "beta", "limit", "sigma", "latent_dim", "latent_channels",
                       "free_bits", "minutes")
        for name in nonnegative:
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.lr < 0:
            raise ValueError(f"--lr must be > 0 (or 0: by the data), got {self.lr}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.binarize and self.likelihood not in ("bernoulli", "auto"):
            raise ValueError(f"--binarize needs --likelihood bernoulli, got {self.likelihood}")
        if self.sigma and self.likelihood not in ("gaussian", "auto"):
            raise ValueError(f"--sigma needs --likelihood gaussian, got {self.likelihood}")
        for name, high in UPPER.items():  # sizes a run can hold in memory; beyond them is a typo or an attack
            if getattr(self, name) > high:
                raise ValueError(f"--{_flag(name)} must be <= {high:,}, got {getattr(self, name):,}")
        for name in ("hidden", "conv_channels", "widths"):
            if len(getattr(self, name)) > MAX_LAYERS or max(getattr(self, name), default=0) > MAX_WIDTH:
                raise ValueError(f"--{_flag(name)} must be at most {MAX_LAYERS} widths of at most {MAX_WIDTH:,}, "
                                 f"got {getattr(self, name)}")
        if self.image_size != "auto" or self.data == "shapes":  # else once the data has chosen it
            self.check_image_size(self.image_hw if self.image_size != "auto" else (SHAPES_SIZE, SHAPES_SIZE))
        if self.latent_channels and self.arch not in ("resnet", "auto"):
            raise ValueError(f"--latent-channels (a spatial latent) needs --arch resnet, got {self.arch}")
        if self.prior_fit in ("gaussian", "mixture") and self.model != "vae":
            raise ValueError(f"--prior-fit {self.prior_fit} needs a VAE (--model vae): a plain autoencoder has no "
                             "prior")
        if self.prior_fit == "mixture" and self.conditional:
            raise ValueError("--prior-fit mixture is for an unconditional model: a --conditional one gets a Gaussian "
                             "per class (--prior-fit gaussian)")
        if self.grad_clip < 0 and self.grad_clip != -1:
            raise ValueError(f"--grad-clip must be >= 0 (or -1: by the data), got {self.grad_clip}")
        if self.patience < -1:
            raise ValueError(f"--patience must be >= 0 (or -1: auto), got {self.patience}")
        if self.kl_warmup < -1:
            raise ValueError(f"--kl-warmup must be >= 0 (or -1: by the data), got {self.kl_warmup}")
        if self.iwae_k > 1 and (self.model != "vae" or self.beta != 1 or self.kl_warmup > 0 or self.free_bits):
            raise ValueError("--iwae-k > 1 needs --model vae, --beta 1, no --kl-warmup and no --free-bits (the IWAE "
                             f"bound has no separate KL term); got model={self.model}, beta={self.beta}, "
                             f"kl_warmup={self.kl_warmup}, free_bits={self.free_bits}")

    def check_image_size(self, hw: tuple[int, int], auto: bool = False) -> None:
        """ValueError when H x W images make a run too large to hold: an MLP's first layer, or the images `shapes`
        would generate. auto: the size was chosen from the data (--image-size auto), before any image is read."""
        size = f"--image-size auto ({hw[0]}x{hw[1]})" if auto else f"--image-size {self.image_size}"
        pixels = hw[0] * hw[1]
        if 4 * pixels * (self.hidden[0] if self.arch == "mlp" else 1) > MAX_FIRST_LAYER:
            raise ValueError(f"{size} with --hidden {self.hidden[0]} makes a first layer of more than "
                             f"{MAX_FIRST_LAYER:,} weights; use --arch conv or a smaller size")
        if self.data == "shapes" and (self.num_train + self.num_test) * pixels > MAX_GENERATED_PIXELS:
            raise ValueError(f"--num-train + --num-test images of {size.removeprefix('--image-size ')} are more "
                             f"than {MAX_GENERATED_PIXELS:,} pixels to generate")

    @property
    def resolved(self) -> bool:
        """Whether the model's data-dependent choices (arch, likelihood, latent size) are made (train/auto.py)."""
        return self.arch != "auto" and self.likelihood != "auto" and (self.latent_dim > 0 or self.latent_channels > 0)

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) from --image-size: "28" -> (28, 28), "56x68" -> (56, 68). "auto" is chosen when the data is read
        (train/dataset.py auto_size) and recorded by train/auto.py resolve."""
        if self.image_size == "auto":
            raise ValueError("--image-size auto: the size is chosen from the data once it is read")
        parts = self.image_size.lower().split("x")
        try:
            hw = tuple(int(p) for p in parts) * (2 if len(parts) == 1 else 1)
        except ValueError:
            hw = ()
        if len(hw) != 2 or not all(1 <= s <= MAX_SIDE for s in hw):
            raise ValueError(f"--image-size must be N or HxW (height x width) with sides in [1, {MAX_SIDE}], "
                             f"got {self.image_size!r}")
        return hw

    def summary(self) -> dict:
        """The fields that describe the model (arg(summary=True)), for the exported graphs' spec."""
        values = self.to_dict()
        return {f.name: values[f.name] for f in dataclasses.fields(self) if f.metadata["summary"]}

    def to_dict(self) -> dict:
        """Every field, as saved (config.json, checkpoints): epochs 0 when --minutes alone ends the run."""
        values = dataclasses.asdict(self)
        if self.epochs == BUDGET_EPOCHS:
            values["epochs"] = 0
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Rebuild from a saved dict (checkpoint['config']); unknown keys are an error, missing ones default."""
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(hints))
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}")
        values = cls.migrated(values)
        return cls(**{k: tuple(v) if hints[k] == tuple[int, ...] else v for k, v in values.items()})

    @staticmethod
    def migrated(values: dict) -> dict:
        """A saved config with what a run saved before a field existed was trained with, where that is not the
        field's default; other missing keys are left out (from_dict gives them their defaults)."""
        if "augment" not in values:
            values = {**values, "augment": "none"}  # saved before --augment existed: trained on unmirrored images
        if "norm" not in values:
            values = {**values, "norm": "group"}  # saved before --norm existed: resnet blocks had GroupNorm
        if values.get("likelihood") == "gaussian" and "sigma_fit" not in values:
            values = {**values, "sigma_fit": "learned"}  # saved before sigma_fit existed: sigma 0 meant learned
        if values.get("likelihood") == "gaussian" and "gaussian_mean" not in values:
            values = {**values, "gaussian_mean": "sigmoid"}  # saved before gaussian_mean existed: a sigmoid's mean
        return values


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 512,256, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser, config_cls=TrainConfig, suppress_defaults: bool = False) -> None:
    """One --flag per dataclass field, typed from its annotation, with its help and choices.

    suppress_defaults: flags not given on the command line are absent from the parsed namespace
    (how `--resume` tells what the user asked to change).
    """
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind = hints[f.name]
        flag = "--" + _flag(f.name)
        shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        # BooleanOptionalAction appends its own "(default: ...)"
        help_text = f.metadata["help"] if kind is bool else f"{f.metadata['help']} (default: {shown})"
        default = argparse.SUPPRESS if suppress_defaults else f.default
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif kind == tuple[int, ...]:
            parser.add_argument(flag, type=_int_tuple, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=default, choices=f.metadata["choices"], help=help_text)


def from_args(args: argparse.Namespace, config_cls=TrainConfig):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def run_dir_main(argv: list[str] | None, prog: str, description: str, config_cls, action) -> int:
    """main() of a stage that works on a run directory: RUN_DIR plus one flag per config_cls field.

    Calls action(run_dir, config); a bad flag is argparse's error, a ValueError or OSError one line and exit 2.
    """
    import sys

    parser = argument_parser(prog=prog, description=description)
    parser.add_argument("run_dir", help="a run directory written by `edgevae train`")
    add_arguments(parser, config_cls)
    args = parser.parse_args(argv)
    try:
        config = from_args(args, config_cls)
    except ValueError as e:
        parser.error(str(e))
    try:
        action(args.run_dir, config)
    except (ValueError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
