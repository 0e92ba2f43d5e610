"""Element-wise activations and softmax: dx = dy * f'(x), written with the forward x or y."""

from __future__ import annotations

import math

from onnxprune.autodiff.context import GradContext, attr
from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()


def _scale(ctx: GradContext, dy: str, factor: str) -> str:
    return ctx.emit("Mul", [dy, factor])


@GRADIENTS.register("Relu", inputs=(0,))
def relu(ctx, node, dys, needs):
    x, y = node.inputs[0], node.outputs[0]
    return [ctx.masked(ctx.emit("Greater", [y, ctx.scalar(0.0, x)]), dys[0])]


@GRADIENTS.register("LeakyRelu", inputs=(0,))
def leaky_relu(ctx, node, dys, needs):
    x = node.inputs[0]
    alpha = float(attr(node, "alpha", 0.01))
    positive = ctx.emit("Greater", [x, ctx.scalar(0.0, x)])
    return [ctx.emit("Where", [positive, dys[0], ctx.emit("Mul", [dys[0], ctx.scalar(alpha, x)])])]


@GRADIENTS.register("PRelu", layer=True)
def prelu(ctx, node, dys, needs):
    x, slope = node.inputs[:2]
    dy = dys[0]
    zero = ctx.scalar(0.0, x)
    positive = ctx.emit("Greater", [x, zero])
    dx = ctx.emit("Where", [positive, dy, ctx.emit("Mul", [dy, slope])]) if needs[0] else None
    dslope = None
    if needs[1]:
        part = ctx.emit("Where", [positive, zero, ctx.emit("Mul", [dy, x])])
        dslope = ctx.sum_to(part, ctx.shape(node.outputs[0]), slope)
    return [dx, dslope]


@GRADIENTS.register("Sigmoid", inputs=(0,))
def sigmoid(ctx, node, dys, needs):
    y = node.outputs[0]
    one_minus = ctx.emit("Sub", [ctx.scalar(1.0, y), y])
    return [_scale(ctx, dys[0], ctx.emit("Mul", [y, one_minus]))]


@GRADIENTS.register("Tanh", inputs=(0,))
def tanh(ctx, node, dys, needs):
    y = node.outputs[0]
    return [_scale(ctx, dys[0], ctx.emit("Sub", [ctx.scalar(1.0, y), ctx.emit("Mul", [y, y])]))]


@GRADIENTS.register("HardSigmoid", inputs=(0,))
def hard_sigmoid(ctx, node, dys, needs):
    y = node.outputs[0]
    alpha = float(attr(node, "alpha", 0.2))
    inside = ctx.emit("And", [ctx.emit("Greater", [y, ctx.scalar(0.0, y)]), ctx.emit("Less", [y, ctx.scalar(1.0, y)])])
    return [ctx.masked(inside, ctx.emit("Mul", [dys[0], ctx.scalar(alpha, y)]))]


@GRADIENTS.register("HardSwish", inputs=(0,))
def hard_swish(ctx, node, dys, needs):
    # y = x * clip(x/6 + 1/2, 0, 1): slope 0 below -3, 1 above 3, x/3 + 1/2 between
    x = node.inputs[0]
    middle = ctx.emit("Add", [ctx.emit("Div", [x, ctx.scalar(3.0, x)]), ctx.scalar(0.5, x)])
    upper = ctx.emit("Where", [ctx.emit("Greater", [x, ctx.scalar(3.0, x)]), ctx.scalar(1.0, x), middle])
    slope = ctx.emit("Where", [ctx.emit("Less", [x, ctx.scalar(-3.0, x)]), ctx.scalar(0.0, x), upper])
    return [_scale(ctx, dys[0], slope)]


@GRADIENTS.register("Clip", inputs=(0,))
def clip(ctx, node, dys, needs):
    x = node.inputs[0]
    lo, hi = node.input(1), node.input(2)  # inputs since opset 11 (training graphs are opset >= 17)
    masks = []
    if lo:
        masks.append(ctx.emit("GreaterOrEqual", [x, lo]))
    if hi:
        masks.append(ctx.emit("LessOrEqual", [x, hi]))
    if not masks:
        return [dys[0]]
    mask = masks[0] if len(masks) == 1 else ctx.emit("And", masks)
    return [ctx.masked(mask, dys[0])]


@GRADIENTS.register("Erf", inputs=(0,))
def erf(ctx, node, dys, needs):
    x = node.inputs[0]
    gauss = ctx.emit("Exp", [ctx.emit("Neg", [ctx.emit("Mul", [x, x])])])
    return [_scale(ctx, dys[0], ctx.emit("Mul", [gauss, ctx.scalar(2.0 / math.sqrt(math.pi), x)]))]


@GRADIENTS.register("Gelu", inputs=(0,))
def gelu(ctx, node, dys, needs):
    return [_scale(ctx, dys[0], gelu_slope(ctx, node.inputs[0], attr(node, "approximate", "none") == "tanh"))]


def gelu_slope(ctx: GradContext, x: str, tanh: bool) -> str:
    """dGELU/dx at x, exact (erf) or in the tanh approximation (also FastGelu's)."""
    s = lambda v: ctx.scalar(v, x)  # noqa: E731
    mul = lambda a, b: ctx.emit("Mul", [a, b])  # noqa: E731
    if tanh:
        # y = x/2 (1 + tanh(u)), u = c (x + 0.044715 x^3)
        c = math.sqrt(2.0 / math.pi)
        x2 = mul(x, x)
        u = mul(s(c), ctx.emit("Add", [x, mul(s(0.044715), mul(x2, x))]))
        t = ctx.emit("Tanh", [u])
        du = mul(s(c), ctx.emit("Add", [s(1.0), mul(s(3 * 0.044715), x2)]))
        sech2 = ctx.emit("Sub", [s(1.0), mul(t, t)])
        return ctx.emit("Add", [mul(s(0.5), ctx.emit("Add", [s(1.0), t])), mul(mul(s(0.5), x), mul(sech2, du))])
    # y = x Phi(x): slope Phi(x) + x phi(x)
    cdf = mul(s(0.5), ctx.emit("Add", [s(1.0), ctx.emit("Erf", [mul(x, s(1.0 / math.sqrt(2.0)))])]))
    pdf = mul(s(1.0 / math.sqrt(2.0 * math.pi)), ctx.emit("Exp", [mul(s(-0.5), mul(x, x))]))
    return ctx.emit("Add", [cdf, mul(x, pdf)])


@GRADIENTS.register("Softsign", inputs=(0,))
def softsign(ctx, node, dys, needs):
    x = node.inputs[0]
    denom = ctx.emit("Add", [ctx.scalar(1.0, x), ctx.emit("Abs", [x])])
    return [ctx.emit("Div", [dys[0], ctx.emit("Mul", [denom, denom])])]


@GRADIENTS.register("Elu", inputs=(0,))
def elu(ctx, node, dys, needs):
    x, y = node.inputs[0], node.outputs[0]
    alpha = float(attr(node, "alpha", 1.0))
    negative_slope = ctx.emit("Add", [y, ctx.scalar(alpha, x)])
    slope = ctx.emit("Where", [ctx.emit("Greater", [x, ctx.scalar(0.0, x)]), ctx.scalar(1.0, x), negative_slope])
    return [_scale(ctx, dys[0], slope)]


@GRADIENTS.register("Log", inputs=(0,))
def log(ctx, node, dys, needs):
    return [ctx.emit("Div", [dys[0], node.inputs[0]])]


@GRADIENTS.register("Neg", inputs=(0,))
def neg(ctx, node, dys, needs):
    return [ctx.emit("Neg", [dys[0]])]


@GRADIENTS.register("Reciprocal", inputs=(0,))
def reciprocal(ctx, node, dys, needs):
    y = node.outputs[0]
    return [ctx.emit("Neg", [_scale(ctx, dys[0], ctx.emit("Mul", [y, y]))])]


@GRADIENTS.register("Sqrt", inputs=(0,))
def sqrt(ctx, node, dys, needs):
    y = node.outputs[0]
    return [ctx.emit("Div", [ctx.emit("Mul", [dys[0], ctx.scalar(0.5, y)]), y])]


def _softmax_axis(ctx: GradContext, node) -> int:
    return int(attr(node, "axis", -1)) % ctx.rank(node.inputs[0])  # one axis since opset 13


@GRADIENTS.register("Softmax", inputs=(0,))
def softmax(ctx, node, dys, needs):
    y, dy = node.outputs[0], dys[0]
    total = ctx.reduce("ReduceSum", ctx.emit("Mul", [dy, y]), [_softmax_axis(ctx, node)])
    return [ctx.emit("Mul", [y, ctx.emit("Sub", [dy, total])])]


@GRADIENTS.register("LogSoftmax", inputs=(0,))
def log_softmax(ctx, node, dys, needs):
    y, dy = node.outputs[0], dys[0]
    total = ctx.reduce("ReduceSum", dy, [_softmax_axis(ctx, node)])
    return [ctx.emit("Sub", [dy, ctx.emit("Mul", [ctx.emit("Exp", [y]), total])])]


# unary ops whose gradient is dy times a slope: op -> slope(ctx, x, y)
SLOPES = {
    "Softplus": lambda ctx, x, y: ctx.emit("Sigmoid", [x]),
    "Exp": lambda ctx, x, y: y,
    "Abs": lambda ctx, x, y: ctx.emit("Sign", [x]),
    "Sin": lambda ctx, x, y: ctx.emit("Cos", [x]),
    "Cos": lambda ctx, x, y: ctx.emit("Neg", [ctx.emit("Sin", [x])]),
    "Atan": lambda ctx, x, y: ctx.emit("Reciprocal", [ctx.emit("Add", [ctx.scalar(1.0, x), ctx.emit("Mul", [x, x])])]),
}


@GRADIENTS.register(tuple(SLOPES), inputs=(0,))
def sloped(ctx, node, dys, needs):
    return [_scale(ctx, dys[0], SLOPES[node.op](ctx, node.inputs[0], node.outputs[0]))]
