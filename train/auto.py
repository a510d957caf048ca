"""`--arch auto`, `--likelihood auto`, `--latent-dim 0`: the choices the training data makes, printed once.

    --image-size auto -> the size the images were read at (train/dataset.py auto_size: their own, the most
                         common one in a folder, at most 128 on the longer side; 28 for shapes)

    binary-like grey images (MNIST, shapes: >= BINARY_LIKE of pixels within 10% of black or white)
        -> --arch mlp --likelihood bernoulli --latent-dim 16 --kl-warmup 0 --grad-clip 0 --augment none
           --batch-size 128 --lr 0.001 --schedule constant
    anything else: colour, or grey photos and icons (Fashion-MNIST, emoji, sprites)
        -> --arch resnet --likelihood logistic --latent-channels C --widths W (spatial_latent: 4 x 16 x 16 on
           16,32,64 for 64 x 64; with --conditional --latent-channels 2 on auto_widths' 4-8 pixel grid, 2 x 8 x 8)
           --prior-fit mixture (gaussian: one per class with --conditional; none past prior.FIT_MAX_DIM latent
           numbers) --kl-warmup 5 --grad-clip 1 --augment flip
           --batch-size 32 --lr 0.002 --schedule cosine (with --arch mlp or conv: --latent-dim 128); RGBA images
           also --alpha clear (what the loader did with --alpha auto: the colour under transparent pixels set to 0)

(--kl-warmup 0 whenever --iwae-k > 1 or --model ae: neither has a KL term to ramp.)

A Bernoulli likelihood on grey levels or colour has no calibrated noise level: it cannot say how sure it
is of a colour and pulls every pixel towards grey. The discretized logistic (train/likelihood.py) learns a
scale per subpixel, so flat colours are sharp and its NLL is in bits per dimension. Flags the user gives
are kept; only `auto` and `0` are filled in.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from .dataset import size_flag

BINARY_LIKE = 0.75  # fraction of pixels near 0 or 255: MNIST 0.91, shapes 0.84, Fashion-MNIST 0.61
NEAR = 0.1  # "near" black or white: within 10% of the range
SAMPLE = 2048  # images looked at
GREY_LATENT, COLOUR_LATENT = 16, 128  # flat latents: binary-like grey images; colour with --arch mlp or conv
# colour with the residual family, conditional: 2 channels on the coarsest grid (2 x 8 x 8 = 128 numbers for 64 x 64),
# with 1x1-conv heads instead of dense layers on the flattened features, and a Gaussian per class over its numbers.
# On 823 RGBA icons (64 x 64), against the dense 128-d latent: test PSNR 17.2 dB in 10 minutes against 16.1 in 20
# (its best epoch was 54 of 189: the dense heads, 3 of its 4 million parameters, learn 667 images by heart), median
# colour shift Delta E 2.2 against 4.7; samples through the fit alike
COLOUR_LATENT_CHANNELS = 2  # what a conditional model keeps: its Gaussian per class needs a small latent
# unconditional colour: a spatial latent, SPATIAL_NUMBERS at most, 2 to 4 channels on a grid of a quarter of the
# image's side or less (two halvings, more while fewer than 2 channels would fit), with the factored mixture fitted
# over it (train/prior.py). On Twemoji (20 minutes each, bench/quality_rgb.py): 4 x 16 x 16 reconstructs test images
# at 26.6 dB where 2 x 8 x 8 reaches 19.4, NLL 1.93 bits/dim against 2.92; the mixture's samples read as emoji about
# as often as the small latent's, with a mottled texture where the small latent's are smooth blobs
SPATIAL_NUMBERS = 1024
GREY_OPTIMIZER = dict(batch_size=128, lr=1e-3, schedule="constant")
# small colour data sets (a few thousand images): more, smaller steps, annealed to 0 over --epochs or --minutes
COLOUR_OPTIMIZER = dict(batch_size=32, lr=2e-3, schedule="cosine")
# the gradient's global norm clipped to 1 on colour: a few hundred images can spike and diverge in the first epochs
# (301 sprites: latent rms 19,079 at epoch 2 without it); on Twemoji, 3 minutes each, test PSNR 14.41 dB with it,
# 13.99 without
COLOUR_CLIP = 1.0
COLOUR_WARMUP = 5  # epochs of KL warm-up: on Twemoji, 5 minutes, 15.0 dB / 4.96 bits/dim with it, 12.9 / 5.31 without
# --augment flip on colour: on Twemoji (20 minutes) the validation -ELBO kept falling to epoch 60 instead of 50 and the
# test -ELBO there was 38,894 nats against 40,730 without it; binary-like grey images are digits and glyphs, whose
# mirror images are not


def looks_binary_grey(x: torch.Tensor) -> tuple[bool, str]:
    """(binary-like grey?, why) for uint8 images (N, C, H, W): one channel (or equal RGB) and mostly near 0 or 255."""
    x = x[:SAMPLE]
    grey = x.shape[1] == 1 or (x.shape[1] == 3 and bool((x[:, :1] == x[:, 1:]).all()))
    if not grey:
        return False, f"{x.shape[1]}-channel colour images"
    v = x[:, :1].float() / 255
    near = ((v <= NEAR) | (v >= 1 - NEAR)).float().mean().item()
    if near >= BINARY_LIKE:
        return True, f"binary-like grey images ({near:.0%} of pixels near black or white)"
    return False, f"grey images with grey levels ({near:.0%} of pixels near black or white)"


def resolve(config, train_x: torch.Tensor, log=print):
    """The config with auto choices made from the training images; logs what was chosen (once) when any was."""
    if config.resolved and config.kl_warmup >= 0 and config.grad_clip >= 0 and config.batch_size and config.lr \
            and config.schedule != "auto" and config.prior_fit != "auto" and config.augment != "auto" \
            and (config.alpha != "auto" or train_x.shape[1] != 4) and config.image_size != "auto":
        return config
    binary, why = looks_binary_grey(train_x)
    chosen = {}
    if config.image_size == "auto":  # the size the data was read at (train/dataset.py auto_size)
        chosen["image_size"] = size_flag(tuple(train_x.shape[2:]))
    if config.likelihood == "auto":
        chosen["likelihood"] = "bernoulli" if binary or config.binarize else "gaussian" if config.sigma else "logistic"
    if config.arch == "auto":
        chosen["arch"] = "resnet" if config.latent_channels or not binary else "mlp"
    if not config.latent_dim and not config.latent_channels:
        residual = chosen.get("arch", config.arch) == "resnet"
        if binary or not residual:
            chosen["latent_dim"] = GREY_LATENT if binary else COLOUR_LATENT
        elif config.conditional:
            chosen["latent_channels"] = COLOUR_LATENT_CHANNELS
        else:
            widths, chosen["latent_channels"] = spatial_latent(tuple(train_x.shape[1:]), tuple(config.widths))
            if not config.widths:
                chosen["widths"] = widths
    if config.kl_warmup < 0:
        chosen["kl_warmup"] = 0 if binary or config.iwae_k > 1 or config.model == "ae" else COLOUR_WARMUP
    if config.grad_clip < 0:
        chosen["grad_clip"] = 0.0 if binary else COLOUR_CLIP
    if config.prior_fit == "auto":  # a mixture for any unconditional latent a fit takes (prior.FIT_MAX_DIM; a large
        # one's is factored); per class, a Gaussian, but not over a latent asked for by --latent-channels: one
        # Gaussian over 4 x 16 x 16 numbers gave coloured mush on Twemoji, and K of them outgrow their tables
        chosen["prior_fit"] = "none" if binary or config.model != "vae" else _fit_for(config, chosen, train_x.shape)
    if config.augment == "auto":
        chosen["augment"] = "none" if binary else "flip"
    if config.alpha == "auto" and train_x.shape[1] == 4:  # what the loader did (train/folder.py preprocessing),
        chosen["alpha"] = "clear"  # recorded, so the checkpoint says it (one saved as auto predates it: keep)
    unset = {"batch_size": 0, "lr": 0.0, "schedule": "auto"}
    for key, value in (GREY_OPTIMIZER if binary else COLOUR_OPTIMIZER).items():
        if getattr(config, key) == unset[key]:
            chosen[key] = value
    resolved = dataclasses.replace(config, **chosen)
    flags = " ".join(f"--{k.replace('_', '-')} " + (format(v, "g") if isinstance(v, float) else
                                                    ",".join(map(str, v)) if isinstance(v, tuple) else str(v))
                     for k, v in chosen.items())
    log(f"auto: {why} -> {flags}")
    return resolved


def spatial_latent(image_shape: tuple[int, int, int], widths: tuple[int, ...] = ()) -> tuple[tuple[int, ...], int]:
    """(widths, latent channels) of the unconditional colour default: SPATIAL_NUMBERS at most, 2 to 4 channels on the
    coarsest grid; widths 16 doubling per level (at most 256) from two halvings on, one more while fewer than 2
    channels would fit (64 x 64 -> 16,32,64 and 4 x 16 x 16; 72 x 72 -> 3 x 18 x 18; 128 x 128 -> 4 x 16 x 16).
    Given widths are kept, and the channels fitted to their grid (at least 1)."""
    from .resnet import Geometry

    def channels(grid: tuple[int, int]) -> int:
        return min(4, SPATIAL_NUMBERS // math.prod(grid))

    if widths:
        return widths, max(1, channels(Geometry(image_shape, widths).grid))
    levels = 3
    while True:
        widths = tuple(min(16 * 2**i, 256) for i in range(levels))
        if min(image_shape[1:]) < 2 ** levels or channels(Geometry(image_shape, widths).grid) >= 2:
            break
        levels += 1
    while len(widths) > 1 and min(image_shape[1:]) < 2 ** (len(widths) - 1):  # too small to halve so often
        widths = widths[:-1]
    return widths, max(1, channels(Geometry(image_shape, widths).grid))


def _fit_for(config, chosen: dict, data_shape: tuple) -> str:
    """--prior-fit auto for a VAE on colour or grey levels: mixture (unconditional), gaussian (conditional on the
    default latent) or none (a latent larger than a fit takes)."""
    from .prior import FIT_MAX_DIM
    from .resnet import Geometry, auto_widths

    if config.conditional:
        return "none" if config.latent_channels else "gaussian"
    channels = chosen.get("latent_channels", config.latent_channels)
    if channels and chosen.get("arch", config.arch) == "resnet":
        shape = tuple(data_shape[1:])
        widths = chosen.get("widths", tuple(config.widths)) or auto_widths(shape)
        numbers = channels * math.prod(Geometry(shape, widths).grid)
        return "mixture" if numbers <= FIT_MAX_DIM else "none"
    return "mixture"
