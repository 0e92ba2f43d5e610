"""Quantized activations (a QDQ model's QuantizeLinear -> DequantizeLinear pairs): the straight-through estimator.

y = DequantizeLinear(q) = (q - z) * s is linear in q, so its rule is exact: dq = dy * s. q = QuantizeLinear(x)
= clamp(round(x / s) + z, qmin, qmax) is piecewise constant; the straight-through estimator (Bengio et al.
2013; PyTorch's fake_quantize backward) takes round() as the identity and keeps the clamp:
dx = dq / s where qmin <= round(x / s) + z <= qmax, 0 outside. Chained, a pair passes dy unchanged
inside the representable range and nothing outside it.

The integer tensor q carries a float gradient (the dtype of s): both rules are marked `integer`, so the
analysis and the builder let a gradient through an integer tensor between them. Weights behind a
DequantizeLinear are lifted to float initializers before pruning (load/qdq_lift.py), so a gradient
reaching an integer initializer is simply not read.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.autodiff.context import GradContext, attr
from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()
# the range of each integer type QuantizeLinear saturates to (float8 and int4 types are refused)
_RANGE = {onnx.TensorProto.INT8: (-128, 127), onnx.TensorProto.UINT8: (0, 255),
          onnx.TensorProto.INT16: (-32768, 32767), onnx.TensorProto.UINT16: (0, 65535)}


def _per_axis(ctx: GradContext, node, param: str, x: str, like: str) -> str:
    """`param` (a scale or zero point) cast to `like`'s type and shaped to broadcast against x:
    a per-axis vector is laid along the node's `axis`."""
    cast = param if ctx.elem_type(param) == ctx.elem_type(like) else ctx.emit("Cast", [param], to=ctx.elem_type(like))
    if ctx.rank(param) == 0 or int(np.prod(ctx.shape(param))) == 1:
        return cast
    rank = ctx.rank(x)
    axis = int(attr(node, "axis", 1)) % rank
    return ctx.emit("Reshape", [cast, ctx.ints([-1 if a == axis else 1 for a in range(rank)])])


def _refuse(ctx: GradContext, node) -> str | None:
    if int(attr(node, "block_size", 0) or 0):
        return f"no gradient rule for blocked {node.op}"
    q = node.outputs[0] if node.op == "QuantizeLinear" else node.inputs[0]
    if ctx.elem_type(q) not in _RANGE:
        return f"no gradient rule for {node.op} of element type {onnx.TensorProto.DataType.Name(ctx.elem_type(q))}"
    return None


@GRADIENTS.register("DequantizeLinear", inputs=(0,), check=_refuse, integer=True)
def dequantize(ctx, node, dys, needs):
    # y = (q - z) * s: dq = dy * s, in s's float type
    q, s = node.inputs[0], node.inputs[1]
    return [ctx.emit("Mul", [dys[0], _per_axis(ctx, node, s, q, node.outputs[0])])]


@GRADIENTS.register("QuantizeLinear", inputs=(0,), check=_refuse, integer=True)
def quantize(ctx, node, dys, needs):
    # straight through round(), zero where the clamp saturates: dx = dq / s * [qmin <= round(x/s) + z <= qmax]
    x, s, z = node.inputs[0], node.inputs[1], node.input(2)
    qmin, qmax = _RANGE[ctx.elem_type(node.outputs[0])]
    scale = _per_axis(ctx, node, s, x, x)
    level = ctx.emit("Round", [ctx.emit("Div", [x, scale])])
    if z:
        level = ctx.emit("Add", [level, _per_axis(ctx, node, z, x, x)])
    inside = ctx.emit("And", [ctx.emit("GreaterOrEqual", [level, ctx.scalar(float(qmin), x)]),
                              ctx.emit("LessOrEqual", [level, ctx.scalar(float(qmax), x)])])
    return [ctx.masked(inside, ctx.emit("Div", [dys[0], scale]))]  # dq has s's type, as x has in a QDQ model
