"""The tiled decoder and encoder: the networks cut into units whose GroupNorms take their statistics as an input.

    units = tiled.decoder_units(source)            # None when the model has no known cut (tiles are then blended)
    graphs = tiled.export_units(units, "decoder")  # one ONNX graph per unit: decoder.tiled.00.onnx, 01, ...

Why units (runtime/_units.py runs them; docs/design.md "Exact tiled decoding" says more): a GroupNorm
normalises with statistics over the whole image, so a tile that computes its own is not the whole decode;
and a deep decoder's receptive field is wide (Stable Diffusion's VAE: ~12 latent cells after its mid
block), so a tile would need a wide halo before its centre is right. Both are solved by cutting the
network where its activations are stored whole between units:

- the decoder's unit 0, the head (post_quant_conv, conv_in, the mid block with its attention over all
  latent positions), runs on the whole latent; every later unit is one ResnetBlock2D (the first after an
  upsampler carries that Upsample2D in front), and the last is conv_norm_out, SiLU, conv_out with the
  fold to [0, 1] and the clamp;
- the encoder mirrored: conv_in (after the unfold from [0, 1]) with the first resnet, one unit per
  resnet (the last of a block carries its Downsample2D behind it), and the tail (mid block, conv_out,
  quant_conv, mean and clamped logvar, z = mu + exp(0.5 logvar) eps) on the whole latent;
- a tiled unit's receptive field is a few pixels (its `halo`, in input pixels, measured by `probe`), so
  tiles of it are exact in their core. Each of its GroupNorms is swapped for `StatsNorm`: the same math,
  (x - mean) / sqrt(var + eps) * weight + bias, with the per-image (mean, var) of each group read from
  the `stats` input. A norm whose input is the unit's input gets them from that stored input; every
  other norm's input is a graph output (`norm_in_K`), whose moments the runtime gathers over the tiles'
  cores in one more pass.

Graph signatures: a tiled unit is (h, stats) -> (y, norm_in_K...): h (N, C_in, h, w), stats (N, S, 2) with
S the sum of the unit's norms' groups (mean, var per group, norms in order), y (N, C_out, h', w') at the
unit's output scale. The decoder's head is (h) -> (y); the encoder's tail (h, eps) -> (z, mu, logvar). The
spec's `tiled_decoder` / `tiled_encoder` list the units (file, whole, scale, halo, channels, norms), so a
host can run them without this code.
"""
from __future__ import annotations

import copy
import math

import onnx
import torch
from torch import nn

from . import graphs

FILE = {"decoder": "decoder.tiled.{:02d}.onnx", "encoder": "encoder.tiled.{:02d}.onnx"}
_EXAMPLE_HW = (6, 8)  # traced spatial size of a unit's input: not 0 or 1, not square, even (strided units)


class _Context:
    """What the StatsNorms of one unit share while it runs: the stats input, the norm inputs seen."""

    def __init__(self):
        self.stats: torch.Tensor | None = None
        self.seen: dict[int, torch.Tensor] = {}


class StatsNorm(nn.Module):
    """nn.GroupNorm's math with the per-image statistics of each group taken from context.stats."""

    def __init__(self, norm: nn.GroupNorm, context: _Context, index: int, offset: int):
        super().__init__()
        self.norm, self.context, self.index, self.offset = norm, context, index, offset
        self.groups = norm.num_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        self.context.seen[self.index] = x
        stats = self.context.stats[:, self.offset:self.offset + self.groups]  # (N, G, 2)

        def per_channel(k):  # stats[..., k] (N, G) -> (N, C, 1, 1), each group's value for its channels
            return stats.narrow(2, k, 1).expand(n, self.groups, c // self.groups).reshape(n, c, 1, 1)

        mean, var = per_channel(0), per_channel(1)
        scale = self.norm.weight.reshape(1, c, 1, 1) / torch.sqrt(var + self.norm.eps)
        return (x - mean) * scale + self.norm.bias.reshape(1, c, 1, 1)


class _Resnet(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x, None)


class _Head(nn.Module):
    """post_quant_conv, conv_in, mid block: the whole latent at once (attention sees every position)."""

    def __init__(self, vae):
        super().__init__()
        self.post_quant_conv, self.conv_in, self.mid_block = vae.post_quant_conv, vae.decoder.conv_in, \
            vae.decoder.mid_block

    def forward(self, z):
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.mid_block(self.conv_in(z), None)


class _Out(nn.Module):
    """conv_norm_out, SiLU, conv_out, then the native range folded to [0, 1] and clamped (as decoder.onnx)."""

    def __init__(self, decoder, native_range):
        super().__init__()
        self.norm, self.act, self.conv = decoder.conv_norm_out, decoder.conv_act, decoder.conv_out
        self.lo, self.hi = native_range

    def forward(self, x):
        x = self.conv(self.act(self.norm(x)))
        return ((x - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)


class _EncoderIn(nn.Module):
    """The native range unfolded from [0, 1], then conv_in (in front of the encoder's first resnet)."""

    def __init__(self, conv_in, native_range):
        super().__init__()
        self.conv_in, (self.lo, self.hi) = conv_in, native_range

    def forward(self, x):
        return self.conv_in(x if (self.lo, self.hi) == (0.0, 1.0) else x * (self.hi - self.lo) + self.lo)


class _EncoderTail(nn.Module):
    """Mid block, conv_norm_out, SiLU, conv_out, quant_conv, then diffusers' DiagonalGaussianDistribution
    (mean, logvar clamped to [-30, 20]) and z = mu + exp(0.5 logvar) eps: the whole latent at once."""

    def __init__(self, vae):
        super().__init__()
        e = vae.encoder
        self.mid_block, self.norm, self.act, self.conv = e.mid_block, e.conv_norm_out, e.conv_act, e.conv_out
        self.quant_conv = vae.quant_conv

    def forward(self, h, eps):
        moments = self.conv(self.act(self.norm(self.mid_block(h))))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mu, logvar = torch.chunk(moments, 2, dim=1)
        logvar = torch.clamp(logvar, -30.0, 20.0)
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar


class Unit(nn.Module):
    """One unit as a graph: tiled (h, stats) -> (y, inputs of the norms that do not read h), or whole."""

    def __init__(self, body: nn.Module, scale: tuple[int, int], whole: bool = False):
        super().__init__()
        self.body, self.scale, self.whole = body, scale, whole
        self.context = _Context()
        self.norms: list[StatsNorm] = []
        if not whole:
            for name, module in list(body.named_modules()):
                if isinstance(module, nn.GroupNorm):
                    parent, _, attr = name.rpartition(".")
                    norm = StatsNorm(module, self.context, len(self.norms), sum(n.groups for n in self.norms))
                    setattr(body.get_submodule(parent) if parent else body, attr, norm)
                    self.norms.append(norm)
        self.direct: list[bool] = []  # per norm: does it read the unit's input (stats from the stored input)?
        self.halo = 0  # input pixels a tile needs around its core (probe measures it)
        self.norm_scales: list[int] = []

    def forward(self, *inputs):
        if self.whole:
            return self.body(*inputs)
        self.context.stats, self.context.seen = inputs[1], {}
        y = self.body(inputs[0])
        return (y, *(self.context.seen[i] for i, d in enumerate(self.direct) if not d))

    def example_stats(self, n: int, dtype=torch.float32) -> torch.Tensor:
        return torch.rand(n, max(1, sum(norm.groups for norm in self.norms)), 2, dtype=dtype) + 0.5

    def probe(self, channels: int) -> None:
        """Run eagerly once: which norms read the unit's input, and the halo."""
        if self.whole:
            return
        h = torch.randn(2, channels, *_EXAMPLE_HW)
        with torch.no_grad():
            self.context.stats, self.context.seen = self.example_stats(2), {}
            self.body(h)
            self.direct = [self.context.seen[i] is h for i in range(len(self.norms))]
            # each norm's resolution, in pixels per latent cell (the input's or the output's)
            self.norm_scales = [self.scale[0] * self.context.seen[i].shape[-1] // h.shape[-1]
                                for i in range(len(self.norms))]
            self.halo = self._receptive_field(channels)

    def _receptive_field(self, channels: int, side: int = 48) -> int:
        """Input pixels around a core that its outputs read: change one input column, in float64, and see
        which outputs move (exactly: once its statistics are given, the unit is local)."""
        body = copy.deepcopy(self.body).double()
        stats = self.example_stats(1, torch.float64)
        for m in body.modules():
            if isinstance(m, StatsNorm):
                m.context = _Context()
                m.context.stats = stats
        h = torch.randn(1, channels, side, side, dtype=torch.float64)
        p = side // 2
        moved = h.clone()
        moved[:, :, :, p] += 1.0
        diff = (body(moved) - body(h)).abs().amax(dim=(0, 1, 2))
        ratio = self.scale[1] / self.scale[0]  # output pixels per input pixel
        reach = 0
        for o in torch.nonzero(diff > 0).flatten().tolist():
            start, end = o / ratio, (o + 1) / ratio  # the input span output pixel o sits on
            reach = max(reach, math.ceil(start - p), math.ceil(p + 1 - end))
        step = max(1, round(1 / ratio))  # a strided unit's crops start on its stride
        return -(-reach // step) * step

    def record(self, file: str, channels_in: int, channels_out: int) -> dict:
        """The unit's entry in the spec's tiled_decoder / tiled_encoder."""
        inner = [i for i, d in enumerate(self.direct) if not d]
        return {"file": file, "whole": self.whole, "scale": list(self.scale), "halo": self.halo,
                "channels": [channels_in, channels_out],
                "norms": [{"groups": n.groups, "input": "unit" if d else f"norm_in_{inner.index(i)}", "scale": s}
                          for i, (n, d, s) in enumerate(zip(self.norms, self.direct, self.norm_scales))]}


def _known(source) -> bool:
    """A tileable diffusers AutoencoderKL with the block layout this module cuts."""
    if getattr(source, "family", None) != "diffusers" or not source.tileable:
        return False
    vae = source.net
    return (getattr(vae.decoder, "mid_block", None) is not None and getattr(vae.encoder, "mid_block", None) is not None
            and all(hasattr(b, "resnets") for b in (*vae.decoder.up_blocks, *vae.encoder.down_blocks)))


def decoder_units(source) -> list[tuple[Unit, int, int]] | None:
    """[(unit, input channels, output channels)] for a Source whose decoder this module knows how to cut,
    else None. Known: diffusers' AutoencoderKL. The Source is not modified (the units hold a deep copy)."""
    if not _known(source):
        return None
    vae = copy.deepcopy(source.net).eval()
    decoder = vae.decoder
    channels = decoder.conv_in.out_channels
    units = [(Unit(_Head(vae), (1, 1), whole=True), source.latent_shape[0], channels)]
    scale, pending = 1, None
    for block in decoder.up_blocks:
        for resnet in block.resnets:
            steps = ([pending] if pending is not None else []) + [_Resnet(resnet)]
            after = scale * (2 if pending is not None else 1)
            units.append((Unit(nn.Sequential(*steps), (scale, after)), channels, resnet.out_channels))
            channels, scale, pending = resnet.out_channels, after, None
        if block.upsamplers is not None:
            pending = block.upsamplers[0]
    if pending is not None or scale != source.latent_scale:
        return None  # an upsampler with no block after it, or a scale the Source does not report
    units.append((Unit(_Out(decoder, source.native_range), (scale, scale)), channels, source.image_shape[0]))
    return units


def encoder_units(source) -> list[tuple[Unit, int, int]] | None:
    """The encoder's units, as decoder_units: conv_in with the first resnet, one unit per resnet (the last
    of a block with its Downsample2D), the tail on the whole latent."""
    if not _known(source) or source.kind != "vae":
        return None
    vae = copy.deepcopy(source.net).eval()
    encoder = vae.encoder
    units, channels, scale = [], source.image_shape[0], source.latent_scale
    front = _EncoderIn(encoder.conv_in, source.native_range)
    for block in encoder.down_blocks:
        for k, resnet in enumerate(block.resnets):
            steps = ([front] if front is not None else []) + [_Resnet(resnet)]
            front = None
            down = k == len(block.resnets) - 1 and block.downsamplers is not None
            if down:
                steps.append(block.downsamplers[0])
            after = scale // 2 if down else scale
            units.append((Unit(nn.Sequential(*steps), (scale, after)), channels, resnet.out_channels))
            channels, scale = resnet.out_channels, after
    if front is not None or scale != 1:
        return None
    units.append((Unit(_EncoderTail(vae), (1, 1), whole=True), channels, source.latent_shape[0]))
    return units


def _dynamic_shapes(names) -> dict:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    h, w = torch.export.Dim("h", min=1, max=1 << 13), torch.export.Dim("w", min=1, max=1 << 13)
    return {name: {0: batch, 2: h, 3: w} if name in ("h", "eps") else {0: batch} for name in names}


def signature(unit: Unit, role: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if unit.whole:
        return (("h", "eps"), ("z", "mu", "logvar")) if role == "encoder" else (("h",), ("y",))
    return ("h", "stats"), ("y", *(f"norm_in_{j}" for j in range(unit.direct.count(False))))


def export_units(units: list[tuple[Unit, int, int]], role: str) -> list[tuple[onnx.ModelProto, dict]]:
    """[(ModelProto, spec record)] of each unit, in order; no metadata yet. role: "decoder" or "encoder"."""
    out = []
    for k, (unit, channels, produced) in enumerate(units):
        unit.probe(channels)
        names = signature(unit, role)
        args = (torch.randn(2, channels, *_EXAMPLE_HW),)
        if "stats" in names[0]:
            args += (unit.example_stats(2),)
        if "eps" in names[0]:
            args += (torch.randn(2, produced, *_EXAMPLE_HW),)
        proto = graphs.to_onnx(unit, args, *names, _dynamic_shapes(names[0]))
        out.append((proto, unit.record(FILE[role].format(k), channels, produced)))
    return out


def parity(source, role: str, unit_graphs: list[tuple[onnx.ModelProto, dict]], tolerance: float) -> dict:
    """The units through onnxruntime, run by the runtime (runtime/_units.py), against the Source itself.

    At a small latent (checks.PARITY_SIDE pixels a side, one cell wider) of test pictures, in one tile and
    in tiles of about a third of a side (cut edges in every unit); ExportCheckError beyond `tolerance`.
    """
    import numpy as np
    import onnxruntime as ort

    from edgevae import _units

    from . import checks, gates

    side = max(3, checks.PARITY_SIDE // source.latent_scale)
    view = checks.at_size(source, (min(side, source.latent_shape[1]), min(side + 1, source.latent_shape[2])))
    x = checks.reference_images(2, view.image_shape).float() / 255
    eps = torch.randn(2, *view.latent_shape, generator=torch.Generator().manual_seed(gates.PARITY_SEED))
    with torch.no_grad():
        mu, logvar = view.encode(x)
        want = [view.decode(mu).clamp(0.0, 1.0)] if role == "decoder" else \
            [view.reparameterize(mu, logvar, eps), mu, logvar]
    sessions = [ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]) for p, _ in unit_graphs]
    units = [record for _, record in unit_graphs]

    def run(k, feed):
        return sessions[k].run(None, feed)

    worst, tiles = 0.0, (max(view.latent_shape[1:]), max(1, view.latent_shape[1] // 3))
    for tile in tiles:
        got = [_units.decode(units, run, mu.numpy(), tile)] if role == "decoder" else \
            _units.encode(units, run, x.numpy(), eps.numpy(), tile)
        worst = max([worst] + [float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want)])
    if not worst <= tolerance:
        raise gates.ExportCheckError(f"tiled {role} differs from the model by {worst:.2e} (bound {tolerance:g})")
    return {"max_abs_diff": worst, "latent": list(view.latent_shape[1:]), "tiles": list(tiles)}
