"""Ops onnx's reference evaluator lacks at the opsets the export writes, or computes noisily, for
ReferenceEvaluator(new_ops=OPS).

    ReferenceEvaluator(model, new_ops=reference_ops.OPS)     # export/gates.py reference_function
"""
from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun


class DequantizeLinear(OpRun):  # the class name is the op type it implements
    """DequantizeLinear as opsets 13 to 18 define it, (x - zero_point) * scale, per tensor or along `axis`:
    onnx.reference implements it only from opset 19 on, and the int8 graphs are opset 18."""

    op_domain = ""

    def _run(self, x, scale, zero_point=None, axis=None, block_size=None, output_dtype=None):
        shape = [1] * x.ndim
        if scale.size > 1:
            shape[1 if axis is None else axis] = -1
        zero = 0 if zero_point is None else zero_point.astype(np.float32).reshape(shape)
        return ((x.astype(np.float32) - zero) * scale.reshape(shape)).astype(scale.dtype),


class Sigmoid(OpRun):
    """1 / (1 + e^-x) from e^-|x| alone. onnx.reference's Sigmoid computes e^x for every element before picking a
    branch, so a logit above 88 (a decoder's saturated alpha or pixel) overflows in the branch it then discards,
    and numpy printed "overflow encountered in exp" and "invalid value encountered in divide" during every such
    export; the values it returned were right, and these are the same."""

    op_domain = ""

    def _run(self, x):
        small = np.exp(-np.abs(x))  # in (0, 1]: never overflows
        return np.where(x >= 0, 1 / (1 + small), small / (1 + small)).astype(x.dtype),


OPS = [DequantizeLinear, Sigmoid]
