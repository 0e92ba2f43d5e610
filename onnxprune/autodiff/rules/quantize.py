"""Activation fake quantization (QuantizeLinear -> DequantizeLinear) as a straight-through estimator.

Rounding has zero derivative almost everywhere, so a QDQ model's gradient would stop at the first
quantized activation. The straight-through estimator lets it pass: QuantizeLinear's integers carry a
float gradient dQ = dY_x / scale, DequantizeLinear's dX_q = dY * scale, so the pair passes dY unchanged
(clipping at the integer range is ignored, as quantization-aware training usually does). Only
per-tensor (scalar) scales: per-channel ones are weights, which load/qdq_lift.py turns into floats.
"""

from __future__ import annotations

import numpy as np

from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()


def _scalar_scale(ctx, node) -> str | None:
    scale = ctx.g.const(node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is None or np.size(scale) != 1:
        return f"{node.op} with a per-channel or computed scale has no straight-through gradient here"
    return None


@GRADIENTS.register("QuantizeLinear", inputs=(0,), check=_scalar_scale, straight=True)
def quantize_linear(ctx, node, dys, needs):
    return [ctx.emit("Div", [dys[0], _scale_like(ctx, node, dys[0])])]


@GRADIENTS.register("DequantizeLinear", inputs=(0,), check=_scalar_scale, straight=True)
def dequantize_linear(ctx, node, dys, needs):
    return [ctx.emit("Mul", [dys[0], _scale_like(ctx, node, dys[0])])]


def _scale_like(ctx, node, dy: str) -> str:
    """The node's scale as a rank-0 constant of the gradient's float type."""
    return ctx.scalar(float(np.asarray(ctx.g.const(node.inputs[1])).reshape(-1)[0]), node.outputs[0]
                      if node.op == "DequantizeLinear" else node.inputs[0])
