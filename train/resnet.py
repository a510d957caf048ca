"""The residual convolutional family, `--arch resnet`: for colour (and grey) images of 16 to 128+ pixels a side.

    edgevae train --data icons --arch resnet --widths 32,64,128,256 --blocks 1 --out runs/icons

Encoder body: x (N, C, H, W) -> padded to multiples of 2^(levels - 1) -> conv3x3 -> per level (finest first):
`blocks` residual blocks at that level's width, then a stride-2 conv3x3 (not after the coarsest) ->
[norm], SiLU -> features (N, F, h, w). Decoder body: (N, F, h, w) -> per level (coarsest first): `blocks`
residual blocks, then nearest-neighbour x2 upsampling and a conv3x3 (not after the finest) -> [norm],
SiLU, conv3x3 to the likelihood's P*C channels -> the centre H x W. The finest level, at full resolution,
has no residual blocks -- only the stem conv in and the output conv out: on CPU its blocks cost more than all
the other levels together (measured on 64 x 64 RGB: 99 against 70 images/s trained, one thread).

Upsampling is nearest-neighbour followed by a convolution, never a transposed convolution: every output
pixel sees the same number of weights, so no checkerboard pattern is built in (Odena et al. 2016), and the
graph holds only Conv, Resize and elementwise ops, which onnxruntime's int8 quantizers handle.
A residual block is [norm], SiLU, conv3x3, [norm], SiLU, conv3x3 plus the input (a 1x1 conv when the
width changes); its last conv starts at zero, so every block starts as the identity.

[norm] is `--norm`: none by default, or group (GroupNorm, 8 groups, what models trained before --norm existed
have). Without normalization the residual branches' zero start is what keeps a deep stack trainable (Zhang et al.
2019, "Fixup Initialization"; De & Smith 2020, "SkipInit"). GroupNorm is left out because it takes each image's
own mean and scale out of every group of channels: a colour carried as how strongly a channel fires -- this sprite
is yellow, that one red -- is divided away, and the network has to learn to carry it in ratios between channels
instead. Measured on 1,350 colour sprites (56 x 68 RGBA), 6 minutes each, same seed: with GroupNorm every
reconstruction came back the same brown (the median test image's mean colour moved Delta E 50.7; PSNR 19.4 dB);
without it, Delta E 12.8 and 23.1 dB (PyTorch's default initialization) and 4.8 and 25.1 dB (preserve_variance's);
a 20-minute GroupNorm run had only reached Delta E 11.1 and 23.7 dB. Without normalization the first Adam steps
need a learning-rate warm-up (train/loop.py `warmed`).

model.py puts the heads on: a flat latent takes dense heads on the flattened features (N, F*h*w) and a
dense layer back; a spatial latent (`--latent-channels Cz`) takes 1x1-conv heads giving mu and logvar
of shape (N, Cz, h, w) and a conv3x3 back.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NORM_GROUPS = 8  # GroupNorm groups (gcd with the width, so any width works)
NORMS = ("none", "group")


def norm(channels: int, kind: str = "group") -> nn.Module:
    """--norm: GroupNorm ("group") or nothing ("none"; an Identity keeps the layers' indices, so both kinds of
    checkpoint name their convolutions alike)."""
    if kind not in NORMS:
        raise ValueError(f"--norm must be one of {', '.join(NORMS)}, got {kind!r}")
    return nn.GroupNorm(math.gcd(NORM_GROUPS, channels), channels) if kind == "group" else nn.Identity()


def in_float32(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer(x), in float32 even inside a bfloat16 autocast (`--precision bfloat16`): the layers whose outputs the
    loss reads directly -- the latent heads and the decoder's last conv -- keep full precision, since bfloat16's 8
    significant bits space values near 1 by 1/256, an 8-bit level. Outside autocast (evaluation, export) it is
    layer(x) itself, so the exported graph does not change."""
    if not torch.is_autocast_enabled(x.device.type):
        return layer(x)
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


def auto_widths(image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Widths by image size: levels until the coarsest side is about 4 to 8 pixels, 16 channels at full resolution
    doubled per level (at most 256); so 28 x 28 -> 16,32,64 (7 x 7), 64 x 64 -> 16,32,64,128 (8 x 8). Starting at
    32 trains 64 x 64 RGB 3x slower on CPU (32 against 99 images/s, one thread) for no gain within minutes."""
    side, levels = min(image_shape[1:]), 1
    while side / 2 ** levels >= 6 and levels < 5:
        levels += 1
    return tuple(min(16 * 2**i, 256) for i in range(levels))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kind: str = "group"):
        super().__init__()
        self.norm1, self.conv1 = norm(c_in, kind), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = norm(c_out, kind), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


def preserve_variance(body: nn.Module) -> None:
    """He initialization for a body without normalization: each conv and dense layer keeps its input's scale (gain 1;
    sqrt(2) for a residual branch's first conv, after a SiLU that halves it), so z still moves the decoder's output at
    the start. PyTorch's default (uniform, a variance of 1 / (3 fan_in)) shrinks the signal to a third per layer, which
    GroupNorm undid; without either, a 64 x 64 decoder's output moved with z 10x less at the start (std over z 0.031
    against 0.33; 0.48 with this). Residual branches' last convs stay at zero."""
    blocks = [b for b in body.modules() if isinstance(b, ResBlock)]
    zero = {id(b.conv2) for b in blocks}
    boosted = {id(b.conv1) for b in blocks}
    for m in body.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in zero:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu" if id(m) in boosted else "linear")
            nn.init.zeros_(m.bias)


class Geometry:
    """Sizes shared by encoder and decoder: padding to a multiple of 2^(levels - 1) and the coarsest grid."""

    def __init__(self, image_shape: tuple[int, int, int], widths: tuple[int, ...]):
        if not widths or min(widths) < 1:
            raise ValueError(f"--widths must be positive widths like 32,64,128, got {widths}")
        _, h, w = image_shape
        factor = 2 ** (len(widths) - 1)
        if min(h, w) < factor:
            raise ValueError(f"--arch resnet with {len(widths)} levels (--widths {','.join(map(str, widths))}) "
                             f"halves the image {len(widths) - 1} times; a {h}x{w} image is too small for that: "
                             f"use fewer widths")
        self.size = (h, w)
        padded = (math.ceil(h / factor) * factor, math.ceil(w / factor) * factor)
        self.top, self.left = (padded[0] - h) // 2, (padded[1] - w) // 2
        self.pad = (self.left, padded[1] - w - self.left, self.top, padded[0] - h - self.top)  # F.pad order
        self.grid = (padded[0] // factor, padded[1] // factor)  # (h, w) of the coarsest features


class ResNetEncoderBody(nn.Module):
    """x (N, C, H, W) -> features (N, widths[-1], h, w); flattened to (N, out_features) when flat."""

    def __init__(self, image_shape: tuple[int, int, int], widths: tuple[int, ...], blocks: int, flat: bool = True,
                 kind: str = "group"):
        super().__init__()
        self.geometry = geo = Geometry(image_shape, widths)
        layers: list[nn.Module] = [nn.Conv2d(image_shape[0], widths[0], 3, padding=1)]
        width = widths[0]
        for level, target in enumerate(widths):
            for _ in range(blocks if level else 0):  # full resolution: the stem conv only
                layers.append(ResBlock(width, target, kind))
                width = target
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        layers += [norm(width, kind), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.flat = flat
        self.out_channels = width
        self.out_features = width * math.prod(geo.grid)
        if kind == "none":
            preserve_variance(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.geometry.pad):
            x = F.pad(x, self.geometry.pad)
        h = self.net(x)
        return h.flatten(1) if self.flat else h


class ResNetDecoderBody(nn.Module):
    """A vector (N, in_features) -- flat -- or a map (N, in_channels, h, w) -> (N, out_channels, H, W)."""

    def __init__(self, image_shape: tuple[int, int, int], widths: tuple[int, ...], blocks: int, out_channels: int,
                 in_features: int = 0, in_channels: int = 0, kind: str = "group"):
        super().__init__()
        self.geometry = geo = Geometry(image_shape, widths)
        top = widths[-1]
        self.grid = (top, *geo.grid)
        if in_features:  # flat latent: a dense layer onto the coarsest grid
            self.project = nn.Linear(in_features, math.prod(self.grid))
        else:  # spatial latent: a conv onto the coarsest width
            self.project = nn.Conv2d(in_channels, top, 3, padding=1)
        self.flat = bool(in_features)
        layers: list[nn.Module] = []
        width = top
        for level in reversed(range(len(widths))):
            for _ in range(blocks if level else 0):  # full resolution: the output conv only
                layers.append(ResBlock(width, widths[level], kind))
                width = widths[level]
            if level > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                           nn.Conv2d(width, widths[level - 1], 3, padding=1)]
                width = widths[level - 1]
        layers += [norm(width, kind), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)
        if kind == "none":
            preserve_variance(self)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h = self.project(v)
        h = self.net[:-1](h.view(-1, *self.grid) if self.flat else h)
        out = in_float32(self.net[-1], h)
        if any(self.geometry.pad):
            (height, width), top, left = self.geometry.size, self.geometry.top, self.geometry.left
            out = out[:, :, top:top + height, left:left + width]
        return out
