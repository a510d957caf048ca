"""Smaller variants of the fp32 graphs: int8 (quantized weights and activations) and fp16 (half-size weights).

int8, a graph with convolutions: onnxruntime.quantization.quantize_static in the QDQ format (standard
QuantizeLinear/DequantizeLinear pairs any ONNX host reads; onnxruntime fuses them into its integer
kernels, QLinearConv on the CPU's int8 dot-product instructions): weights int8 per output channel,
7-bit (reduce_range, so hosts without VNNI cannot saturate their 16-bit u8 x s8 pair sums), activations
uint8 with ranges calibrated (min/max) on real inputs: the checkpoint's reference images and fixed eps
for the encoder; the fp32 encoder's z of those images and fixed N(0, I) latents for the decoder
(`calibration`). A fitted prior's change of variable stays float32 (`_float_nodes`); when the graphs quantized
everywhere else miss their bounds, export tries again with the layers next to the outputs -- the decoder's
likelihood head, the encoder's latent heads -- float32 as well (`_head_nodes`, ATTEMPTS): they cost speed (the
decoder's head runs at full resolution: the GroupNorm residual family at batch 64 ran 1.51x fp32 quantized
everywhere, 1.41x with them float), so only models that need them get them; and when the encoder still misses
(a fitted prior's whitening magnifies its rounding), with the encoder's weights stored as float16 instead. Dynamic
quantization would leave every convolution's activations float32 and quantize them again at each call: on the
residual conv family that ran 5x slower than fp32.
int8, a graph without convolutions (MLP, transposed-conv decoders): quantize_dynamic, weights int8 per
output channel, activations quantized per batch at run time (3x fp32 on the MLP; onnxruntime has no
integer transposed convolution, so static ranges buy nothing there).
fp16: weights stored as float16 and Cast back to float32 inside the graph; onnxruntime folds the
Casts when the session loads, so compute stays float32 on every host (onnxruntime's CPU provider has
few float16 kernels) and only the file halves. Inputs and outputs stay float32.

Each variant is kept only if it is within every bound of its row of export/bounds.py's table (GATES
here), measured as `edgevae verify` measures it; the measurements go into its spec and are printed.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .bounds import BOUNDS as GATES  # the one table of bounds a variant must meet (export/bounds.py)

VARIANTS = tuple(v for v in GATES if v != "fp32")
# What export tries, in order, until a variant meets its bounds. int8: every weighted layer quantized; then the
# layers next to the outputs float32 (`_head_nodes`); then also the encoder with float16 weights and float32 compute
# (to_fp16_weights): a fitted prior's whitening magnifies the encoder's 8-bit rounding along the latent's narrow
# directions (the default Twemoji model: z 5.4% rms off with the heads float, bound 5%), while sampling -- what a
# device runs most -- needs only the decoder, whose int8 kept 30.9 dB there.
# Last, for both variants, the encoder left float32: a fitted mixture (train/prior.py) picks each image's component by
# a maximum of responsibilities, which any rounding of the encoder flips for images between two components (the
# tiny test model's fp16 encoder: mu 28% rms off), while its decoder meets its bounds.
ATTEMPTS = {"int8": ({}, {"float_heads": True}, {"float_heads": True, "encoder": "fp16"},
                     {"float_heads": True, "encoder": "fp32"}),
            "fp16": ({}, {"encoder": "fp32"})}
WHY_NOT = {  # said when export leaves a variant out: the likely cause and what to use instead
    "int8": "8-bit activations cannot resolve this model's decoder closely enough, even with the encoder "
            "float16 or float32 (and, for convolutional graphs, the layers next to the outputs float32); the fp32 "
            "graphs are what it would have approximated, and --fp16 halves the files without 8-bit rounding",
    "fp16": "float16 weights move this model's decoder's outputs more than its bounds allow; the fp32 graphs are "
            "exact",
}


def to_fp16_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose float32 initializers are stored as float16, each Cast back to float32 on use; but for small
    ones and a fitted mixture's small tables (its cuts and stretches: float16 would move them by up to 1/2048, and
    a sample whose u lies that close to a cut would take another component)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    casts, keep = [], []
    for init in graph.initializer:
        size = int(np.prod(init.dims))
        if init.data_type != onnx.TensorProto.FLOAT or size < 16 or (_mapped(init.name) and size <= SMALL_MAP):
            keep.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "__fp16")
        keep.append(half)
        casts.append(onnx.helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                           name=init.name + "__cast"))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return out


SMALL_MAP = 4096  # a fitted prior's tables up to this many numbers stay float32 in fp16 (to_fp16_weights)


# The ops whose inputs and outputs the static path quantizes: the weighted layers, where the integer kernels
# pay. GroupNorm, SiLU, residual adds, upsampling and the heads' nonlinearities stay float32 between a
# DequantizeLinear and a QuantizeLinear (quantizing them too measured ~5% faster, less accurate, and
# per-channel ranges on their small parameters gave graphs onnxruntime refused to load).
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]
CALIBRATION_SEED = 2_718_281  # eps and prior latents the int8 ranges are calibrated on: fixed, so exports repeat
CALIBRATION_BATCH = 64


class _Feeds:
    """onnxruntime.quantization's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def calibration(vae, ckpt: dict, encoder: onnx.ModelProto) -> dict[str, list[dict[str, np.ndarray]]]:
    """Feeds per role to calibrate the int8 activation ranges on, in batches of CALIBRATION_BATCH.

    encoder: the checkpoint's reference images (test images kept for export's checks) with fixed eps
    (and their labels); decoder: the fp32 `encoder`'s z of those images, which is what reconstruction
    decodes, and for a VAE as many N(0, I) latents, which is what sampling decodes.
    """
    from edgevae.noise import standard_normal

    from . import gates  # gates imports this module

    names = gates.signature(vae, "encoder")[0]
    enc_in = gates.encoder_inputs(vae, ckpt, len(ckpt["reference_x"]), CALIBRATION_SEED)
    z = gates.session(encoder).run(None, {n: enc_in[n] for n in names})[0]
    dec_in = [gates.decoder_inputs(vae, z, enc_in)]
    if vae.kind == "vae":
        dec_in.append(gates.decoder_inputs(vae, standard_normal(CALIBRATION_SEED + 1, z.shape), enc_in))
    batches = lambda inputs: [{k: v[i:i + CALIBRATION_BATCH] for k, v in inputs.items()}  # noqa: E731
                              for i in range(0, len(next(iter(inputs.values()))), CALIBRATION_BATCH)]
    return {"encoder": batches({n: enc_in[n] for n in names}), "decoder": [b for d in dec_in for b in batches(d)]}


def _mapped(name: str) -> bool:
    """Whether an initializer is one of a fitted prior's tables (train/prior.py LatentMap: *.latent_map.*)."""
    return ".latent_map." in name


# ops a fitted prior's change of variable is made of, between its tables and the network's own layers
_MAP_OPS = {"MatMul", "Reshape", "Unsqueeze", "Squeeze", "Add", "Sub", "Mul", "Neg", "Exp", "Log", "Clip"}


_RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}  # ops that move numbers without changing them


def _float_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes int8 leaves in float32: a fitted prior's change of variable (train/prior.py; its tables are named
    *.latent_map.*). Its matrix products act on the latent itself, where one 8-bit step is a visible change of
    image, and on exp(-logvar), which spans decades: quantized, the int8 graphs fall outside their bounds.
    The nodes reading a table, the nodes fed by them through the map's own ops (a per-class fit's picked
    matrices reach a second MatMul), and the nodes producing what they read (the mu head)."""
    weights = {init.name for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    region = [node for node in model.graph.node if any(_mapped(name) for name in node.input)]
    seen = {id(node) for node in region}
    for node in region:  # grows while it is walked
        for out in node.output:
            for nxt in consumers.get(out, []):
                foreign = any(name in weights and not _mapped(name) for name in nxt.input)
                if nxt.op_type in _MAP_OPS and not foreign and id(nxt) not in seen:
                    seen.add(id(nxt))
                    region.append(nxt)
    feeding = {name for node in region for name in node.input}  # ... and the nodes it maps the outputs of (the
    # mu head's Gemm, or a spatial latent's Conv through the Reshape that flattens it): the whitening L^-1
    # magnifies their 8-bit steps along the latent's narrow directions
    producer = {out: node for node in model.graph.node for out in node.output}
    todo = list(feeding)
    while todo:
        node = producer.get(todo.pop())
        if node is not None and node.op_type in _RESHAPES:
            feeding.add(node.input[0])
            todo.append(node.input[0])
    return [node.name for node in model.graph.node if id(node) in seen or set(node.output) & feeding]


def _head_nodes(model: onnx.ModelProto) -> list[str]:
    """The weighted layers (QUANTIZED_OPS with a weight initializer) nearest the graph's outputs: every output is
    reached from them through unweighted ops only. Static int8 leaves them float32, as is usual for a network's
    last layer: the decoder's head outputs the likelihood's location and log-scale channels side by side, which
    one 8-bit activation range cannot resolve both of (the no-normalization residual decoder on Twemoji: x_hat
    22.7 dB against fp32 with its head quantized, 34.2 dB without; bound 30); the encoder's heads output the
    latent, where one 8-bit step is a visible change of image. They are one conv or matrix product each."""
    weights = {init.name for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    heads, seen, todo = [], set(), [o.name for o in model.graph.output]
    while todo:
        node = producer.get(todo.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in QUANTIZED_OPS and any(name in weights for name in node.input):
            heads.append(node.name)
        else:
            todo.extend(node.input)
    return heads


def is_static(model: onnx.ModelProto, feeds) -> bool:
    """Whether int8 quantizes this graph statically (it has convolutions and calibration feeds); else dynamically,
    where every weighted layer is quantized and float_heads has nothing to leave out."""
    return bool(feeds) and any(node.op_type == "Conv" for node in model.graph.node)


def to_int8(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]] | None = None,
            float_heads: bool = False) -> onnx.ModelProto:
    """int8 weights and activations: static QDQ for graphs with convolutions (given calibration feeds), the
    layers next to the outputs left float32 with float_heads; dynamic otherwise; see the module doc."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        logging.disable(logging.WARNING)  # its advice to run onnxruntime's pre-processing script first
        keep = _float_nodes(model)
        try:
            if is_static(model, feeds):
                quantize_static(src, dst, _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                                reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=QUANTIZED_OPS,
                                nodes_to_exclude=keep + (_head_nodes(model) if float_heads else []))
            else:
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep)
        finally:
            logging.disable(logging.NOTSET)
        return onnx.load(dst)


def make(variant: str, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]] | None = None, *,
         role: str = "decoder", float_heads: bool = False, encoder: str = "int8") -> onnx.ModelProto:
    """The `variant` of the fp32 graph of `role`; int8 takes calibration feeds for that graph (see `calibration`)
    and an ATTEMPTS entry: float_heads, and encoder="fp16" for an encoder stored as fp16 is, "fp32" for one kept."""
    if role == "encoder" and encoder == "fp32":  # a copy: the variant's own spec goes into it
        kept = onnx.ModelProto()
        kept.CopyFrom(model)
        return kept
    if variant == "int8" and role == "encoder" and encoder == "fp16":
        return to_fp16_weights(model)
    if variant == "int8":
        return to_int8(model, feeds, float_heads)
    if variant == "fp16":
        return to_fp16_weights(model)
    raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def recipe(attempt: dict, role: str, static: set[str]) -> tuple:
    """What an ATTEMPTS entry makes of the graph of `role`, given the roles quantized statically (`static`; dynamic
    quantization has no layers to leave out): ("fp16",), or ("int8", heads left float32). Equal recipes, equal
    graphs: export builds each once."""
    if role == "encoder" and attempt.get("encoder") in ("fp16", "fp32"):
        return (attempt["encoder"],)
    return ("int8", bool(attempt.get("float_heads")) and role in static)


def layout(attempt: dict, static: set[str]) -> str | None:
    """What an ATTEMPTS entry left unquantized, for export's log, the spec's quality record and `info`."""
    heads = [role for role in ("encoder", "decoder") if recipe(attempt, role, static) == ("int8", True)]
    parts = ([f"the {' and '.join(heads)}'s layers next to the outputs kept float32"] if heads else []) + (
        ["the encoder kept as float16 weights (float32 compute), since quantized to 8 bits it missed its bounds"]
        if attempt.get("encoder") == "fp16" else []) + (
        ["the encoder kept float32, since rounded to float16 it missed its bounds"]
        if attempt.get("encoder") == "fp32" else [])
    return "; ".join(parts) or None


def file_name(role: str, variant: str) -> str:
    """encoder.onnx for fp32, encoder.int8.onnx for a variant."""
    return f"{role}.onnx" if variant == "fp32" else f"{role}.{variant}.onnx"

