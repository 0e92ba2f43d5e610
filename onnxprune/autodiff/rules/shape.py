"""Ops that move elements without changing them: dX is dY moved back."""

from __future__ import annotations

import numpy as np

from onnxprune.autodiff.context import attr
from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()


@GRADIENTS.register(("Reshape", "Flatten", "Squeeze", "Unsqueeze"), inputs=(0,))
def reshape(ctx, node, dys, needs):
    return [ctx.reshape_like(dys[0], node.inputs[0])]


@GRADIENTS.register("Transpose", inputs=(0,))
def transpose(ctx, node, dys, needs):
    rank = ctx.rank(node.inputs[0])
    perm = list(attr(node, "perm", list(range(rank))[::-1]))
    return [ctx.emit("Transpose", [dys[0]], perm=[int(i) for i in np.argsort(perm)])]


@GRADIENTS.register("Expand", inputs=(0,))
def expand(ctx, node, dys, needs):
    return [ctx.sum_to(dys[0], ctx.shape(node.outputs[0]), node.inputs[0])]


def _check_dropout(ctx, node):
    training = node.input(2)
    if training:
        value = ctx.g.const(training)
        if value is None or bool(np.asarray(value).reshape(-1)[0]):
            return "Dropout in training mode is not supported; export in eval mode"
    return None


@GRADIENTS.register("Identity", inputs=(0,))
def identity(ctx, node, dys, needs):
    return [dys[0]]


@GRADIENTS.register("Dropout", inputs=(0,), check=_check_dropout)
def dropout(ctx, node, dys, needs):
    return [dys[0]]


@GRADIENTS.register(("Cast", "CastLike"), inputs=(0,))
def cast(ctx, node, dys, needs):
    x = node.inputs[0]
    if ctx.elem_type(x) == ctx.elem_type(node.outputs[0]):
        return [dys[0]]
    return [ctx.emit("Cast", [dys[0]], to=ctx.elem_type(x))]


@GRADIENTS.register("Tile", inputs=(0,))
def tile(ctx, node, dys, needs):
    # y viewed as (r0, s0, r1, s1, ...): dX sums the r axes. Axis 0 (the batch) is left to -1.
    x = node.inputs[0]
    repeats = ctx.ints_of(node.inputs[1], "repeats", node)
    dims, summed = [], []
    for axis, (r, s) in enumerate(zip(repeats, ctx.shape(x))):
        if r != 1:
            summed.append(len(dims))
            dims.append(r)
        dims.append(-1 if axis == 0 else s)
    if not summed:
        return [dys[0], None]
    viewed = ctx.emit("Reshape", [dys[0], ctx.ints(dims)])
    return [ctx.reshape_like(ctx.emit("ReduceSum", [viewed, ctx.ints(summed)], keepdims=0), x), None]
