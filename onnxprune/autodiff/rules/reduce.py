"""Reductions: dY is broadcast back over the reduced axes (divided by the count for a mean)."""

from __future__ import annotations

from onnxprune.autodiff.context import attr
from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()


def _reduced_axes(ctx, node) -> list[int] | None:
    """Normalised reduced axes; None for a no-op reduction (empty axes with noop_with_empty_axes)."""
    rank = ctx.rank(node.inputs[0])
    if node.input(1):
        axes = ctx.ints_of(node.input(1), "axes", node)
    else:
        axes = attr(node, "axes", None)
    if not axes:
        return None if int(attr(node, "noop_with_empty_axes", 0)) else list(range(rank))
    return sorted(int(a) % rank for a in axes)


def _spread(ctx, node, dy: str) -> str:
    """dY broadcast to the input's shape."""
    x = node.inputs[0]
    axes = _reduced_axes(ctx, node)
    if axes is None:
        return dy
    if not int(attr(node, "keepdims", 1)):
        dy = ctx.emit("Unsqueeze", [dy, ctx.ints(axes)])
    return ctx.emit("Expand", [dy, ctx.shape_of(x)])


@GRADIENTS.register("ReduceSum", inputs=(0,))
def reduce_sum(ctx, node, dys, needs):
    return [_spread(ctx, node, dys[0])]


@GRADIENTS.register("ReduceMean", inputs=(0,))
def reduce_mean(ctx, node, dys, needs):
    x, y = node.inputs[0], node.outputs[0]
    if _reduced_axes(ctx, node) is None:
        return [dys[0]]
    # the count is read at run time, so a mean over the batch axis stays right for any batch size
    return [ctx.emit("Div", [_spread(ctx, node, dys[0]), ctx.count(x, y, x)])]


@GRADIENTS.register("ReduceSumSquare", inputs=(0,))
def reduce_sum_square(ctx, node, dys, needs):
    x = node.inputs[0]
    return [ctx.emit("Mul", [_spread(ctx, node, dys[0]), ctx.emit("Mul", [x, ctx.scalar(2.0, x)])])]


@GRADIENTS.register(("ReduceMax", "ReduceMin"), inputs=(0,))
def reduce_extreme(ctx, node, dys, needs):
    # every element equal to the extreme receives dY (ties share it, as a subgradient)
    x, y = node.inputs[0], node.outputs[0]
    hit = ctx.emit("Equal", [x, _spread(ctx, node, y)])
    return [ctx.masked(hit, _spread(ctx, node, dys[0]))]
