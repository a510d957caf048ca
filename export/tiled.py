"""The tiled decoder: a decoder cut into units whose GroupNorms take their statistics as an input.

    units = tiled.decoder_units(source)      # None when the model has no known cut (then tiling is approximate)
    protos = tiled.export_units(units)       # one ONNX graph per unit: decoder.tiled.00.onnx, 01, ...

Why units (runtime/_tiles.py runs them, docs/design.md "Exact tiled decoding" says more): a GroupNorm
normalises with statistics over the whole image, so a tile that computes its own is not the whole decode;
and a deep decoder's receptive field is wide (Stable Diffusion's VAE: ~12 latent cells after its mid
block), so a tile needs a wide halo before its centre is right. Both are solved by cutting the decoder
where its activations are stored whole between units:

- unit 0, the head (post_quant_conv, conv_in, the mid block with its attention over all latent
  positions), runs on the whole latent: it is at latent resolution, where activations are small;
- every later unit is one ResnetBlock2D (the first after an upsampler carries that Upsample2D in front),
  and the last is conv_norm_out, SiLU, conv_out with the fold to [0, 1]. A unit's receptive field is
  a few pixels (its `halo`, in output pixels), so tiles of it are exact in their core;
- each GroupNorm in a unit is swapped for `StatsNorm`: the same math, (x - mean) / sqrt(var + eps) *
  weight + bias, with the per-image (mean, var) of each group read from the `stats` input. A norm whose
  input is the unit's input gets them from that stored input; every other norm's input is a graph output
  (`norm_in_K`), whose moments the runtime gathers over the tiles' cores in one more pass.

Graph signature of unit k: (h, stats) -> (y, norm_in_K...): h (N, C_in, h, w), stats (N, S, 2) with S
the sum of the unit's norms' groups (mean, var per group, norms in order), y (N, C_out, r*h, r*w) for an
upsampling ratio r. The head is (h) -> (y). The spec's `tiled_decoder` lists the units (file, scales,
halo, channels, norms), so a host can run them without this code.
"""
from __future__ import annotations

import copy

import onnx
import torch
from torch import nn

from . import graphs

FILE = "decoder.tiled.{:02d}.onnx"
_EXAMPLE_HW = (6, 7)  # traced spatial size of a unit's input: not 0 or 1, not square (no specialisation)


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


class Unit(nn.Module):
    """One unit as a graph: (h, stats) -> (y, inputs of the norms that do not read h)."""

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
        # output pixels a tile's core must keep from a cut edge: every conv runs at the unit's output resolution
        self.halo = 0 if whole else sum(m.kernel_size[0] // 2 * m.dilation[0] for m in body.modules()
                                        if isinstance(m, nn.Conv2d))

    def forward(self, h, stats=None):
        self.context.stats, self.context.seen = stats, {}
        y = self.body(h)
        return (y, *(self.context.seen[i] for i, d in enumerate(self.direct) if not d))

    def probe(self, channels: int) -> torch.Tensor:
        """Run once eagerly on an example: which norms read the input, and the example's output."""
        h = torch.randn(2, channels, *_EXAMPLE_HW)
        stats = torch.rand(2, max(1, sum(n.groups for n in self.norms)), 2) + 0.5
        self.direct = [True] * len(self.norms)  # so forward returns y alone while probing
        with torch.no_grad():
            self.context.stats, self.context.seen = stats, {}
            y = self.body(h)
        self.direct = [self.context.seen[i] is h for i in range(len(self.norms))]
        return y

    def record(self, file: str, channels_in: int, channels_out: int) -> dict:
        """The unit's entry in the spec's tiled_decoder."""
        inner = [i for i, d in enumerate(self.direct) if not d]
        return {"file": file, "whole": self.whole, "scale": list(self.scale), "halo": self.halo,
                "channels": [channels_in, channels_out],
                "norms": [{"groups": n.groups, "input": "unit" if d else f"norm_in_{inner.index(i)}"}
                          for i, (n, d) in enumerate(zip(self.norms, self.direct))]}


def decoder_units(source) -> list[tuple[Unit, int]] | None:
    """[(unit, input channels)] for a Source whose decoder this module knows how to cut, else None.

    Known: diffusers' AutoencoderKL (Decoder: conv_in, mid_block, up_blocks of ResnetBlock2D and
    Upsample2D, conv_norm_out). The Source is not modified: the units hold a deep copy of its decoder.
    """
    if getattr(source, "family", None) != "diffusers" or not source.tileable:
        return None
    vae = copy.deepcopy(source.net).eval()
    decoder = vae.decoder
    if getattr(decoder, "mid_block", None) is None or not all(
            hasattr(b, "resnets") for b in decoder.up_blocks):
        return None
    units = [(Unit(_Head(vae), (1, 1), whole=True), source.latent_shape[0])]
    channels, scale, pending = decoder.conv_in.out_channels, 1, None
    for block in decoder.up_blocks:
        for resnet in block.resnets:
            steps = ([pending] if pending is not None else []) + [_Resnet(resnet)]
            after = scale * (2 if pending is not None else 1)
            units.append((Unit(nn.Sequential(*steps), (scale, after)), channels))
            channels, scale, pending = resnet.out_channels, after, None
        if block.upsamplers is not None:
            pending = block.upsamplers[0]
    if pending is not None or scale != source.latent_scale:
        return None  # an upsampler with no block after it, or a scale the Source does not report
    units.append((Unit(_Out(decoder, source.native_range), (scale, scale)), channels))
    return units


def _dynamic_shapes(unit: Unit) -> dict:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    h, w = torch.export.Dim("h", min=1, max=1 << 13), torch.export.Dim("w", min=1, max=1 << 13)
    shapes = {"h": {0: batch, 2: h, 3: w}}
    if not unit.whole:
        shapes["stats"] = {0: batch}
    return shapes


def export_units(units: list[tuple[Unit, int]]) -> list[tuple[onnx.ModelProto, dict]]:
    """[(ModelProto, spec record)] of each unit, in order; no metadata yet."""
    out = []
    for k, (unit, channels) in enumerate(units):
        y = unit.probe(channels)
        inner = [f"norm_in_{j}" for j in range(unit.direct.count(False))]
        names_in = ("h",) if unit.whole else ("h", "stats")
        args = (torch.randn(2, channels, *_EXAMPLE_HW),)
        if not unit.whole:
            args += (torch.rand(2, sum(n.groups for n in unit.norms), 2) + 0.5,)
        proto = graphs.to_onnx(unit, args, names_in, ("y", *inner), _dynamic_shapes(unit))
        out.append((proto, unit.record(FILE.format(k), channels, y.shape[1])))
    return out



def parity(source, unit_graphs: list[tuple[onnx.ModelProto, dict]], tolerance: float) -> dict:
    """The units through onnxruntime, run by the runtime's tiled decoder, against the Source's own decode.

    At a small latent (checks.PARITY_SIDE pixels a side) of an encoded test picture, in one tile and in
    tiles of about a third of a side (cut edges in every unit); ExportCheckError beyond `tolerance`.
    """
    import numpy as np
    import onnxruntime as ort

    from edgevae import _units

    from . import checks, gates

    side = max(3, checks.PARITY_SIDE // source.latent_scale)
    view = checks.at_size(source, (min(side, source.latent_shape[1]), min(side + 1, source.latent_shape[2])))
    x = checks.reference_images(2, view.image_shape).float() / 255
    with torch.no_grad():
        z = view.encode(x)[0]
        want = view.decode(z).clamp(0.0, 1.0).numpy()
    sessions = [ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]) for p, _ in unit_graphs]
    units = [record for _, record in unit_graphs]
    worst, tiles = 0.0, (max(view.latent_shape[1:]), max(1, view.latent_shape[1] // 3))
    for tile in tiles:
        got = _units.decode(units, lambda k, feed: sessions[k].run(None, feed), z.numpy(), tile)
        worst = max(worst, float(np.abs(got - want).max()))
    if not worst <= tolerance:
        raise gates.ExportCheckError(f"tiled decoder differs from the model's decode by {worst:.2e} "
                                     f"(bound {tolerance:g})")
    return {"max_abs_diff": worst, "latent": list(view.latent_shape[1:]), "tiles": list(tiles)}
