"""Shape rules of the ops an EdgeVAE graph may hold (spec.ALLOWED_OPS), for runtime/_shapes.py's inference.

Each rule takes a node and its inputs' facts (Info: shape, item size, the values of small int tensors such as
shapes and axes, whether it depends on weights only) and returns its outputs' facts and the scratch memory
its kernel needs besides them (a convolution's unfolded input). A rule raises Bad for inputs the op cannot
take; shape inputs (Reshape's shape, Expand's shape, Unsqueeze's and Squeeze's axes, Slice's starts and
ends, Split's sizes, Resize's sizes) must have values: constants, or made from Shape by Slice, Concat,
Squeeze, Unsqueeze, Cast, Add and Mul (which keep sizes growing with the batch and a tile's sides).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from . import _onnxproto as P


@dataclass(slots=True)
class Info:
    """What inference knows of a tensor."""
    shape: tuple[int, ...]
    itemsize: int
    value: tuple[int, ...] | None = None  # for small int tensors: constants, and what Shape gives
    const: bool = False  # depends on initializers only (onnxruntime folds it at load)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


class Bad(ValueError):
    pass


def macs(op: str, args: list, made: list) -> int:
    """Multiply-adds of one node, from its shapes: the dot products of Gemm, MatMul and the convolutions; one
    per output value for everything else (elementwise work, normalisations, resizing)."""
    if op == "Gemm":
        return math.prod(args[0].shape) * made[0].shape[1]  # (M x K) x N
    if op in ("MatMul", "MatMulInteger"):
        return math.prod(made[0].shape) * args[0].shape[-1]
    if op in ("Conv", "ConvInteger"):
        return math.prod(made[0].shape) * math.prod(args[1].shape[1:])
    if op == "ConvTranspose":
        return math.prod(args[0].shape) * math.prod(args[1].shape[1:])
    return sum(math.prod(t.shape) for t in made)


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise Bad(f"shapes {', '.join(map(str, shapes))} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _need(args: list, count: int, optional: int = 0) -> list:
    if len(args) < count or len(args) > count + optional or any(a is None for a in args[:count]):
        raise Bad(f"takes {count} to {count + optional} inputs, got {len(args)}")
    return args + [None] * (count + optional - len(args))


def _const(args) -> bool:
    return all(a.const for a in args if a is not None)


def _ints(node: P.Node, name: str, default):
    attr = node.attributes.get(name)
    if attr is None:
        return default
    values = attr.ints if attr.ints or attr.i is None else [attr.i]
    if any(abs(v) > 1 << 31 for v in values):
        raise Bad(f"attribute {name} {values} out of range")
    return list(values) if isinstance(default, list) else values[0] if values else default


def _elementwise(node, args):
    (x,) = _need(args, 1)
    return [Info(x.shape, x.itemsize, None, x.const)], 0


def _binary(node, args):
    a, b = _need(args, 2)
    itemsize = 1 if node.op_type in ("Less", "Greater") else a.itemsize
    shape = _broadcast(a.shape, b.shape)
    return [Info(shape, itemsize, _arithmetic(node.op_type, a, b, shape), _const(args))], 0


def _arithmetic(op: str, a: Info, b: Info, shape: tuple) -> tuple | None:
    """The values of Add, Mul (and Div by a positive constant) on shape values: h * w for a Reshape, say.
    Only operations that keep non-negative sizes growing with the inputs, so sizes stay monotone in the batch
    and the spatial sizes; anything else (Sub, a negative result) is not followed, and a shape made from it
    is refused."""
    if a.value is None or b.value is None or len(shape) > 1 or not all(
            isinstance(v, int) and v >= 0 for v in a.value + b.value):
        return None
    if op == "Div" and not (b.const and all(v > 0 for v in b.value)):
        return None
    fn = {"Add": operator.add, "Mul": operator.mul, "Div": operator.floordiv}.get(op)
    if fn is None:
        return None
    left, right = (v * math.prod(shape) if len(v) == 1 else v for v in (a.value, b.value))  # broadcast a scalar
    return tuple(fn(x, y) for x, y in zip(left, right))


def _where(node, args):
    c, x, y = _need(args, 3)
    return [Info(_broadcast(c.shape, x.shape, y.shape), x.itemsize, None, _const(args))], 0


def _clip(node, args):
    x, _, _ = _need(args, 1, 2)
    return [Info(x.shape, x.itemsize, None, _const(args))], 0


def _cast(node, args):
    (x,) = _need(args, 1)
    to = _ints(node, "to", 0)
    if to not in P.ITEMSIZE:
        raise Bad(f"cast to element type {to}")
    value = x.value if to in (P.INT64, P.INT32) and _ints_known(x) else None
    return [Info(x.shape, P.ITEMSIZE[to], value, x.const)], 0


def _gemm(node, args):
    a, b, _ = _need(args, 2, 1)
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise Bad(f"needs 2-D inputs, got {a.shape} and {b.shape}")
    m, k = a.shape[::-1] if _ints(node, "transA", 0) else a.shape
    k2, n = b.shape[::-1] if _ints(node, "transB", 0) else b.shape
    if k != k2:
        raise Bad(f"inner dims {k} and {k2} differ")
    return [Info((m, n), 4, None, _const(args))], 0


def _matmul_shape(a: tuple, b: tuple) -> tuple:
    if not a or not b:
        raise Bad("MatMul needs inputs of rank >= 1")
    a2, b2 = (1, *a) if len(a) == 1 else a, (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise Bad(f"inner dims of {a} and {b} differ")
    out = (*_broadcast(a2[:-2], b2[:-2]), a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _matmul_integer(node, args):
    a, b, _, _ = _need(args, 2, 2)
    return [Info(_matmul_shape(a.shape, b.shape), 4, None, _const(args))], 0


def _conv(node, args):
    transpose = node.op_type == "ConvTranspose"
    x, w, *_ = _need(args, 2, 2 if node.op_type == "ConvInteger" else 1)
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise Bad(f"needs (N, C, ...) input and weight of the same rank, got {x.shape} and {w.shape}")
    spatial = len(x.shape) - 2
    group = _ints(node, "group", 1)
    kernel = _ints(node, "kernel_shape", list(w.shape[2:]))
    strides, dilations = _ints(node, "strides", [1] * spatial), _ints(node, "dilations", [1] * spatial)
    pads = _ints(node, "pads", [0] * 2 * spatial)
    if (group < 1 or len(kernel) != spatial or list(kernel) != list(w.shape[2:]) or len(strides) != spatial
            or len(dilations) != spatial or len(pads) != 2 * spatial or min(strides + dilations) < 1 or min(pads) < 0):
        raise Bad("kernel_shape, strides, dilations, pads or group do not fit its weight")
    auto_pad = (node.attributes["auto_pad"].s if "auto_pad" in node.attributes else None) or "NOTSET"
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise Bad(f"auto_pad {auto_pad!r}")
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    size = x.shape[2:]
    if transpose:
        if x.shape[1] != w.shape[0] or w.shape[0] % group:
            raise Bad(f"input channels {x.shape[1]} do not match weight {w.shape} with group {group}")
        channels = w.shape[1] * group
        output_shape = _ints(node, "output_shape", [])
        output_padding = _ints(node, "output_padding", [0] * spatial)
        if len(output_padding) != spatial or min(output_padding) < 0:
            raise Bad("output_padding does not fit its weight")
        if output_shape:
            out = list(output_shape[-spatial:])
        elif auto_pad.startswith("SAME"):
            out = [i * s for i, s in zip(size, strides)]
        else:
            begin, end = (pads[:spatial], pads[spatial:]) if auto_pad == "NOTSET" else ([0] * spatial,) * 2
            out = [s * (i - 1) + p + k - b - e for i, s, p, k, b, e in
                   zip(size, strides, output_padding, span, begin, end)]
        workspace = channels // group * math.prod(kernel) * math.prod(size)  # col buffer of one image
    else:
        if x.shape[1] != w.shape[1] * group or w.shape[0] % group:
            raise Bad(f"input channels {x.shape[1]} do not match weight {w.shape} with group {group}")
        channels = w.shape[0]
        if auto_pad.startswith("SAME"):
            out = [-(-i // s) for i, s in zip(size, strides)]
        else:
            begin, end = (pads[:spatial], pads[spatial:]) if auto_pad == "NOTSET" else ([0] * spatial,) * 2
            out = [(i + b + e - k) // s + 1 for i, b, e, k, s in zip(size, begin, end, span, strides)]
        workspace = x.shape[1] // group * math.prod(kernel) * math.prod(out)  # im2col of one image
    if min(out) < 1 or len(out) != spatial:
        raise Bad(f"output spatial size {out} from input {size}")
    itemsize = 4
    return [Info((x.shape[0], channels, *out), itemsize, None, _const(args))], workspace * 4


def _reshape(node, args):
    x, shape = _need(args, 2)
    if not _ints_known(shape) or len(shape.shape) != 1:
        raise Bad("its shape must be a constant or come from Shape")
    allowzero = _ints(node, "allowzero", 0)
    dims = [x.shape[i] if v == 0 and not allowzero and i < len(x.shape) else v for i, v in enumerate(shape.value)]
    known = math.prod(d for d in dims if d != -1)
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise Bad(f"shape {list(shape.value)}")
    total = math.prod(x.shape)
    if -1 in dims:
        if known == 0 or total % known:
            raise Bad(f"cannot reshape {x.shape} to {list(shape.value)}")
        dims[dims.index(-1)] = total // known
    if math.prod(dims) != total:
        raise Bad(f"cannot reshape {x.shape} to {list(shape.value)}")
    return [Info(tuple(dims), x.itemsize, x.value, _const(args))], 0


def _expand(node, args):
    x, shape = _need(args, 2)
    if not _ints_known(shape) or len(shape.shape) != 1 or min(shape.value, default=0) < 0:
        raise Bad("its shape must be a constant or come from Shape")
    return [Info(_broadcast(x.shape, tuple(shape.value)), x.itemsize, None, _const(args))], 0


def _unsqueeze(node, args):
    x, axes = _need(args, 2)
    if not _ints_known(axes):
        raise Bad("its axes must be a constant")
    rank = len(x.shape) + len(axes.value)
    norm = sorted(a + rank if a < 0 else a for a in axes.value)
    if len(set(norm)) != len(norm) or not all(0 <= a < rank for a in norm):
        raise Bad(f"axes {list(axes.value)} for rank {len(x.shape)}")
    dims = list(x.shape)
    for a in norm:
        dims.insert(a, 1)
    return [Info(tuple(dims), x.itemsize, x.value, _const(args))], 0


def _concat(node, args):
    if not args or any(a is None for a in args):
        raise Bad("needs inputs")
    rank = len(args[0].shape)
    axis = _ints(node, "axis", None)
    if axis is None or not -rank <= axis < rank or any(len(a.shape) != rank for a in args):
        raise Bad(f"axis {axis} for inputs of shapes {[a.shape for a in args]}")
    axis %= rank
    rest = {a.shape[:axis] + a.shape[axis + 1:] for a in args}
    if len(rest) != 1:
        raise Bad(f"inputs of shapes {[a.shape for a in args]} differ off axis {axis}")
    dims = list(args[0].shape)
    dims[axis] = sum(a.shape[axis] for a in args)
    value = tuple(v for a in args for v in a.value) if rank == 1 and all(a.value is not None for a in args) else None
    return [Info(tuple(dims), args[0].itemsize, value, _const(args))], 0


def _gather_nd(node, args):
    data, indices = _need(args, 2)
    batch_dims = _ints(node, "batch_dims", 0)
    if not indices.shape or not 1 <= indices.shape[-1] <= len(data.shape) - batch_dims or batch_dims < 0 \
            or data.shape[:batch_dims] != indices.shape[:batch_dims]:
        raise Bad(f"indices {indices.shape} do not fit data {data.shape} with batch_dims {batch_dims}")
    shape = indices.shape[:-1] + data.shape[batch_dims + indices.shape[-1]:]
    return [Info(shape, data.itemsize, None, _const(args))], 0


def _shape(node, args):
    (x,) = _need(args, 1)
    rank = len(x.shape)
    start, end = _ints(node, "start", 0), _ints(node, "end", rank)
    start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
    value = x.shape[start:end]
    return [Info((len(value),), 8, tuple(value), x.const)], 0


def _dynamic_quantize(node, args):
    (x,) = _need(args, 1)
    const = x.const
    return [Info(x.shape, 1, None, const), Info((), 4, None, const), Info((), 1, None, const)], 0


def _quantize(node, args):
    """QuantizeLinear (to 8 bits) and DequantizeLinear (to float32): x's shape, per tensor or per axis."""
    x, _, _ = _need(args, 2, 1)
    return [Info(x.shape, 1 if node.op_type == "QuantizeLinear" else 4, None, _const(args))], 0


def _ints_known(t: Info | None) -> bool:
    return t is not None and t.value is not None and all(isinstance(v, int) for v in t.value)


def _ints_of(t: Info | None, what: str) -> list[int]:
    if not _ints_known(t):
        raise Bad(f"its {what} must be a constant or come from Shape")
    return list(t.value)


def _axis(a: int, rank: int, what: str) -> int:
    if not -rank <= a < rank:
        raise Bad(f"{what} {a} for rank {rank}")
    return a % rank


def _transpose(node, args):
    (x,) = _need(args, 1)
    perm = _ints(node, "perm", list(range(len(x.shape)))[::-1])
    if sorted(perm) != list(range(len(x.shape))):
        raise Bad(f"perm {perm} for rank {len(x.shape)}")
    return [Info(tuple(x.shape[p] for p in perm), x.itemsize, None, x.const)], 0


def _squeeze(node, args):
    x, axes = _need(args, 1, 1)
    if axes is None:
        dims = [d for d in x.shape if d != 1]
    else:
        drop = {_axis(a, len(x.shape), "axis") for a in _ints_of(axes, "axes")}
        if any(x.shape[a] != 1 for a in drop):
            raise Bad(f"cannot squeeze axes {sorted(drop)} of {x.shape}")
        dims = [d for i, d in enumerate(x.shape) if i not in drop]
    return [Info(tuple(dims), x.itemsize, x.value, _const(args))], 0


def _matmul(node, args):
    a, b = _need(args, 2)
    return [Info(_matmul_shape(a.shape, b.shape), a.itemsize, None, _const(args))], 0


def _slice(node, args):
    x, starts, ends, axes, steps = _need(args, 3, 2)
    starts, ends = _ints_of(starts, "starts"), _ints_of(ends, "ends")
    axes = _ints_of(axes, "axes") if axes is not None else list(range(len(starts)))
    steps = _ints_of(steps, "steps") if steps is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        raise Bad("starts, ends, axes and steps differ in length, or a step is 0")
    dims, value = list(x.shape), x.value
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, len(dims), "axis")
        index = range(dims[axis])[slice(start, end, step)]  # Python's slice clamps exactly as ONNX's does
        dims[axis] = len(index)
        if value is not None and len(x.shape) == 1:
            value = tuple(value[i] for i in index)
    return [Info(tuple(dims), x.itemsize, value if len(x.shape) == 1 else None, _const(args))], 0


def _pad(node, args):
    """Pad (opset 11+): pads as an input, [begin of every axis (or of `axes`), then end of each]; sizes only grow
    by constant amounts, negative pads (cropping) are refused."""
    x, pads, _, axes = _need(args, 2, 2)
    pads = _ints_of(pads, "pads")
    axes = [_axis(a, len(x.shape), "axis") for a in _ints_of(axes, "axes")] if axes is not None \
        else list(range(len(x.shape)))
    if len(pads) != 2 * len(axes) or min(pads, default=0) < 0 or not pads or not _const([args[1]]):
        raise Bad(f"pads must be 2 constant non-negative sizes per padded axis, got {pads}")
    dims = list(x.shape)
    for i, axis in enumerate(axes):
        dims[axis] += pads[i] + pads[i + len(axes)]
    return [Info(tuple(dims), x.itemsize, None, x.const)], 0


def _split(node, args):
    x, split = _need(args, 1, 1)
    axis = _axis(_ints(node, "axis", 0), len(x.shape), "axis")
    size = x.shape[axis]
    if split is not None:
        parts = _ints_of(split, "split")
    else:
        count = _ints(node, "num_outputs", len(node.outputs))
        if count < 1:
            raise Bad(f"num_outputs {count}")
        piece = -(-size // count)
        parts = [min(piece, max(size - piece * i, 0)) for i in range(count)]
    if sum(parts) != size or min(parts) < 0:
        raise Bad(f"split {parts} of axis {axis} of {x.shape}")
    return [Info(x.shape[:axis] + (p,) + x.shape[axis + 1:], x.itemsize, None, _const(args)) for p in parts], 0


def _resize(node, args):
    x, _, scales, sizes = _need(args, 1, 3)
    axes = _ints(node, "axes", list(range(len(x.shape))))
    dims = list(x.shape)
    if sizes is not None and sizes.shape != (0,):
        for axis, size in zip(axes, _ints_of(sizes, "sizes")):
            dims[_axis(axis, len(dims), "axis")] = size
    elif scales is not None and scales.value is not None and len(scales.value) == len(axes):
        for axis, scale in zip(axes, scales.value):
            if not 0 < scale <= 1 << 16:
                raise Bad(f"scale {scale}")
            a = _axis(axis, len(dims), "axis")
            dims[a] = math.floor(dims[a] * scale)
    else:
        raise Bad("its scales or sizes must be constants (or sizes from Shape)")
    if min(dims, default=1) < 0:
        raise Bad(f"output size {dims}")
    return [Info(tuple(dims), x.itemsize, None, _const(args))], 0


def _normalization(node, args):
    x, _, _ = _need(args, 3)
    return [Info(x.shape, x.itemsize, None, _const(args))], 0


RULES = {
    **{op: _elementwise for op in ("Abs", "Exp", "Log", "Relu", "Sigmoid", "Tanh", "Reciprocal", "Neg", "Softplus")},
    **{op: _binary for op in ("Add", "Sub", "Mul", "Div", "Less", "Greater")},
    "Pad": _pad,  # --arch resnet: sides padded to a multiple of 2^(levels - 1)
    "Where": _where, "Clip": _clip, "Cast": _cast, "Gemm": _gemm, "MatMulInteger": _matmul_integer,
    "Conv": _conv, "ConvInteger": _conv, "ConvTranspose": _conv, "Reshape": _reshape, "Expand": _expand,
    "Unsqueeze": _unsqueeze, "Concat": _concat, "GatherND": _gather_nd, "Shape": _shape,
    "DynamicQuantizeLinear": _dynamic_quantize, "QuantizeLinear": _quantize, "DequantizeLinear": _quantize,
    # imported VAEs: attention, GroupNorm's lowering, upsampling
    "LeakyRelu": _elementwise, "Softmax": _elementwise, "InstanceNormalization": _normalization,
    "Transpose": _transpose, "Squeeze": _squeeze, "MatMul": _matmul, "Slice": _slice, "Split": _split,
    "Resize": _resize,
}
