"""The networks a VAE (or the AE baseline) is built from, sized by config: MLP or convolutional.

An encoder body maps x (N, C, H, W) to features (N, F); a decoder body maps a vector (N, D') to the
likelihood's parameters (N, P*C, H, W); train/resnet.py holds the residual family, `--arch resnet`.
The conv decoder upsamples with ConvTranspose2d(kernel 4, stride 2, padding 1): the kernel is a multiple of the
stride, so every output pixel gets the same number of taps and no
checkerboard pattern is built in (Odena et al., "Deconvolution and Checkerboard Artifacts", 2016).
"""
from __future__ import annotations

import math

import torch
from torch import nn

KERNEL, STRIDE, PADDING = 4, 2, 1  # each conv layer halves (encoder) or doubles (decoder) the side exactly


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoderBody(nn.Sequential):
    def __init__(self, image_shape: tuple[int, int, int], hidden: tuple[int, ...]):
        super().__init__(nn.Flatten(), mlp([math.prod(image_shape), *hidden]), nn.ReLU())
        self.out_features = hidden[-1]


class MLPDecoderBody(nn.Module):
    def __init__(self, out_shape: tuple[int, int, int], hidden: tuple[int, ...], in_features: int):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = mlp([in_features, *reversed(hidden), math.prod(out_shape)])

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(v).view(-1, *self.out_shape)  # (N, P*C, H, W)


def conv_grid(image_shape: tuple[int, int, int], channels: tuple[int, ...]) -> tuple[int, int]:
    """(h, w) after len(channels) stride-2 layers; the sides must divide by 2^layers."""
    _, h, w = image_shape
    factor = STRIDE ** len(channels)
    if h % factor or w % factor:
        raise ValueError(f"--arch conv with {len(channels)} layers (--conv-channels {','.join(map(str, channels))}) "
                         f"needs image sides divisible by {factor}, got {h}x{w}; change --image-size or the layers")
    return h // factor, w // factor


class ConvEncoderBody(nn.Sequential):
    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, ...]):
        h, w = conv_grid(image_shape, channels)
        layers: list[nn.Module] = []
        for c_in, c_out in zip((image_shape[0], *channels[:-1]), channels):
            layers += [nn.Conv2d(c_in, c_out, KERNEL, STRIDE, PADDING), nn.ReLU()]
        super().__init__(*layers, nn.Flatten())  # (N, channels[-1] * h * w)
        self.out_features = channels[-1] * h * w


class ConvDecoderBody(nn.Module):
    def __init__(self, out_shape: tuple[int, int, int], channels: tuple[int, ...], in_features: int):
        super().__init__()
        h, w = conv_grid(out_shape, channels)
        self.grid = (channels[-1], h, w)
        self.project = nn.Sequential(nn.Linear(in_features, math.prod(self.grid)), nn.ReLU())
        layers: list[nn.Module] = []
        widths = (*reversed(channels), out_shape[0])
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(c_in, c_out, KERNEL, STRIDE, PADDING))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(v).view(-1, *self.grid))  # (N, c, h, w) -> (N, C, H, W)


ARCHS = {"mlp": (MLPEncoderBody, MLPDecoderBody), "conv": (ConvEncoderBody, ConvDecoderBody)}


def bodies(arch: str, widths: tuple[int, ...], image_shape: tuple[int, int, int], decoder_in: int,
           out_shape: tuple[int, int, int] | None = None) -> tuple[nn.Module, nn.Module]:
    """(encoder body, decoder body): widths are the MLP's hidden widths or the conv layers' channels.

    out_shape: what the decoder body produces, (P*C, H, W) for a likelihood with P parameters per channel.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    encoder, decoder = ARCHS[arch]
    return encoder(image_shape, widths), decoder(out_shape or image_shape, widths, decoder_in)
