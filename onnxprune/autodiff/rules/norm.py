"""BatchNormalization in inference form (a per-channel affine map) and LayerNormalization."""

from __future__ import annotations

from onnxprune.autodiff.context import attr
from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()


def _check_batchnorm(ctx, node):
    if int(attr(node, "training_mode", 0)) or len([o for o in node.outputs if o]) > 1:
        return "BatchNormalization in training mode (batch statistics) is not supported; export in eval mode"
    return None


@GRADIENTS.register("BatchNormalization", inputs=(0, 1, 2), check=_check_batchnorm, layer=True)
def batch_norm(ctx, node, dys, needs):
    # y = scale * (x - mean) / sqrt(var + eps) + bias, with the running statistics frozen
    x, scale, bias, mean, var = node.inputs[:5]
    dy = dys[0]
    rank = ctx.rank(x)
    axes = [0] + list(range(2, rank))
    per_channel = ctx.ints([-1] + [1] * (rank - 2))
    eps = ctx.scalar(float(attr(node, "epsilon", 1e-5)), var)
    rstd = ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.emit("Add", [var, eps])])])
    dx = dscale = dbias = None
    if needs[0]:
        dx = ctx.emit("Mul", [dy, ctx.emit("Reshape", [ctx.emit("Mul", [scale, rstd]), per_channel])])
    if needs[1]:
        centred = ctx.emit("Sub", [x, ctx.emit("Reshape", [mean, per_channel])])
        summed = ctx.emit("ReduceSum", [ctx.emit("Mul", [dy, centred]), ctx.ints(axes)], keepdims=0)
        dscale = ctx.emit("Mul", [summed, rstd])
    if needs[2]:
        dbias = ctx.emit("ReduceSum", [dy, ctx.ints(axes)], keepdims=0)
    return [dx, dscale, dbias, None, None]


@GRADIENTS.register("LayerNormalization", inputs=(0, 1, 2), layer=True)
def layer_norm(ctx, node, dys, needs):
    # y = xhat * scale + bias over axes [axis, rank); the forward node's Mean and InvStdDev are reused
    x, scale = node.inputs[:2]
    bias = node.input(2)
    y, dy = node.outputs[0], dys[0]
    rank = ctx.rank(x)
    axis = int(attr(node, "axis", -1)) % rank
    axes = list(range(axis, rank))
    mean, rstd = ctx.forward_output(node, 1), ctx.forward_output(node, 2)
    xhat = ctx.emit("Mul", [ctx.emit("Sub", [x, mean]), rstd])
    shape = ctx.shape(y)
    dx = dscale = dbias = None
    if needs[0]:
        # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * scale
        g = ctx.emit("Mul", [dy, scale])
        m1 = ctx.reduce("ReduceMean", g, axes)
        m2 = ctx.reduce("ReduceMean", ctx.emit("Mul", [g, xhat]), axes)
        centred = ctx.emit("Sub", [ctx.emit("Sub", [g, m1]), ctx.emit("Mul", [xhat, m2])])
        dx = ctx.emit("Mul", [rstd, centred])
    if needs[1]:
        dscale = ctx.sum_to(ctx.emit("Mul", [dy, xhat]), shape, scale)
    if len(needs) > 2 and needs[2]:
        dbias = ctx.sum_to(dy, shape, bias)
    return [dx, dscale, dbias][:len(node.inputs)]
