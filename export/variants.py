"""Smaller variants of the fp32 graphs: int8 (dynamic quantization) and fp16 (half-size weights).

int8: onnxruntime.quantization.quantize_dynamic, weights int8 per output channel, activations
quantized per batch at run time. Static QDQ quantization with calibration batches was measured on
the shapes decoder at the same speed but lower PSNR (41.5 vs 42.4 dB), and it needs data at export.
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


def to_fp16_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose float32 initializers are stored as float16, each Cast back to float32 on use."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < 16:  # small ones stay fp32
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


def to_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Dynamic int8 quantization of the MatMul/Gemm/Conv weights (onnxruntime.quantization)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        logging.disable(logging.WARNING)  # its advice to run onnxruntime's pre-processing script first
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            logging.disable(logging.NOTSET)
        return onnx.load(dst)


def make(variant: str, model: onnx.ModelProto) -> onnx.ModelProto:
    if variant == "int8":
        return to_int8(model)
    if variant == "fp16":
        return to_fp16_weights(model)
    raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def file_name(role: str, variant: str) -> str:
    """encoder.onnx for fp32, encoder.int8.onnx for a variant."""
    return f"{role}.onnx" if variant == "fp32" else f"{role}.{variant}.onnx"

