"""Broadcasting arithmetic: each input's gradient is summed over the axes it was broadcast along."""

from __future__ import annotations

from onnxprune.autodiff.context import GradContext
from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()


def _out_shape(ctx: GradContext, node) -> tuple[int, ...]:
    return ctx.shape(node.outputs[0])


@GRADIENTS.register(("Add", "Sum"))
def add(ctx, node, dys, needs):
    shape = _out_shape(ctx, node)
    return [ctx.sum_to(dys[0], shape, x) if need else None for x, need in zip(node.inputs, needs)]


@GRADIENTS.register("Sub")
def sub(ctx, node, dys, needs):
    a, b = node.inputs
    shape = _out_shape(ctx, node)
    da = ctx.sum_to(dys[0], shape, a) if needs[0] else None
    db = ctx.emit("Neg", [ctx.sum_to(dys[0], shape, b)]) if needs[1] else None
    return [da, db]


@GRADIENTS.register("Mul")
def mul(ctx, node, dys, needs):
    # y = a * b: each input's gradient is dy times the other input
    a, b = node.inputs
    shape = _out_shape(ctx, node)
    return [ctx.sum_to(ctx.emit("Mul", [dys[0], other]), shape, x) if need else None
            for x, other, need in ((a, b, needs[0]), (b, a, needs[1]))]


@GRADIENTS.register("Div")
def div(ctx, node, dys, needs):
    # y = a / b: da = dy / b, db = -dy * y / b
    a, b = node.inputs
    y = node.outputs[0]
    shape = _out_shape(ctx, node)
    quotient = ctx.emit("Div", [dys[0], b])
    da = ctx.sum_to(quotient, shape, a) if needs[0] else None
    db = ctx.emit("Neg", [ctx.sum_to(ctx.emit("Mul", [quotient, y]), shape, b)]) if needs[1] else None
    return [da, db]


@GRADIENTS.register("Pow")
def pow_(ctx, node, dys, needs):
    # y = x^p: dx = dy * p * x^(p-1), dp = dy * y * ln(x)
    x, p = node.inputs
    y = node.outputs[0]
    shape = _out_shape(ctx, node)
    exponent = p if ctx.elem_type(p) == ctx.elem_type(x) else ctx.emit("Cast", [p], to=ctx.elem_type(x))
    dx = dp = None
    if needs[0]:
        constant = ctx.g.const(p)
        if constant is not None and constant.size == 1 and float(constant.reshape(-1)[0]) == 2.0:
            slope = ctx.emit("Mul", [x, ctx.scalar(2.0, x)])  # the common case (decomposed LayerNorm)
        else:
            lowered = ctx.emit("Pow", [x, ctx.emit("Sub", [exponent, ctx.scalar(1.0, x)])])
            slope = ctx.emit("Mul", [exponent, lowered])
        dx = ctx.sum_to(ctx.emit("Mul", [dys[0], slope]), shape, x)
    if needs[1]:
        dp = ctx.sum_to(ctx.emit("Mul", [ctx.emit("Mul", [dys[0], y]), ctx.emit("Log", [x])]), shape, p)
    return [dx, dp]


@GRADIENTS.register("Where", inputs=(1, 2))
def where(ctx, node, dys, needs):
    cond, a, b = node.inputs
    shape = _out_shape(ctx, node)
    zero = ctx.scalar(0.0, node.outputs[0])
    da = ctx.sum_to(ctx.emit("Where", [cond, dys[0], zero]), shape, a) if needs[1] else None
    db = ctx.sum_to(ctx.emit("Where", [cond, zero, dys[0]]), shape, b) if needs[2] else None
    return [None, da, db]


@GRADIENTS.register(("Max", "Min"))
def max_min(ctx, node, dys, needs):
    # dY goes to the input that holds the extreme value; on a tie, to the first such input only
    y, shape = node.outputs[0], _out_shape(ctx, node)
    taken = None
    grads = []
    for x, need in zip(node.inputs, needs):
        hit = ctx.emit("Equal", [x, y])
        if taken is not None:
            hit = ctx.emit("And", [hit, ctx.emit("Not", [taken])])
        taken = hit if taken is None else ctx.emit("Or", [taken, hit])
        grads.append(ctx.sum_to(ctx.emit("Mul", [dys[0], ctx.emit("CastLike", [hit, dys[0]])]), shape, x)
                     if need else None)
    return grads
