"""Ops onnx's reference evaluator lacks at the opsets the export writes, for ReferenceEvaluator(new_ops=OPS).

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


OPS = [DequantizeLinear]
