"""BatchNormalization in inference form (a per-channel affine map), LayerNormalization, InstanceNormalization
and GroupNormalization."""

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
        dx = normalized_grad(ctx, ctx.emit("Mul", [dy, scale]), xhat, rstd, axes)
    if needs[1]:
        dscale = ctx.sum_to(ctx.emit("Mul", [dy, xhat]), shape, scale)
    if len(needs) > 2 and needs[2]:
        dbias = ctx.sum_to(dy, shape, bias)
    return [dx, dscale, dbias][:len(node.inputs)]


def normalized_grad(ctx, g: str, xhat: str, rstd: str, axes: list[int]) -> str:
    """dx of xhat = (x - mean) * rstd over `axes`, given g = dL/dxhat: rstd (g - mean(g) - xhat mean(g xhat))."""
    m1 = ctx.reduce("ReduceMean", g, axes)
    m2 = ctx.reduce("ReduceMean", ctx.emit("Mul", [g, xhat]), axes)
    return ctx.emit("Mul", [rstd, ctx.emit("Sub", [ctx.emit("Sub", [g, m1]), ctx.emit("Mul", [xhat, m2])])])


def standardize(ctx, x: str, axes: list[int], eps: float) -> tuple[str, str]:
    """(xhat, rstd) of x over `axes` (keepdims), recomputed in the backward."""
    centred = ctx.emit("Sub", [x, ctx.reduce("ReduceMean", x, axes)])
    var = ctx.reduce("ReduceMean", ctx.emit("Mul", [centred, centred]), axes)
    rstd = ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.emit("Add", [var, ctx.scalar(eps, x)])])])
    return ctx.emit("Mul", [centred, rstd]), rstd


@GRADIENTS.register(("InstanceNormalization", "GroupNormalization"), inputs=(0, 1, 2), layer=True)
def instance_group_norm(ctx, node, dys, needs):
    # InstanceNorm is GroupNorm with one channel per group. Scale and bias are per channel, except
    # GroupNormalization before opset 21, where they are per group.
    x, scale, bias = node.inputs[:3]
    dy = dys[0]
    rank = ctx.rank(x)
    channels = ctx.shape(x)[1]
    groups = int(attr(node, "num_groups", channels))
    per_group = node.op == "GroupNormalization" and ctx.opset < 21 and groups != channels
    eps = float(attr(node, "epsilon", 1e-5))
    grouped = ctx.emit("Reshape", [x, ctx.ints([0, groups, -1])])
    xhat_g, rstd = standardize(ctx, grouped, [2], eps)
    xhat = ctx.reshape_like(xhat_g, x)
    per_channel = ctx.ints([-1] + [1] * (rank - 2))
    outer = [0] + list(range(2, rank))

    def channel_sum(t: str) -> str:  # summed per channel, then per group where the weights are
        summed = ctx.emit("ReduceSum", [t, ctx.ints(outer)], keepdims=0)
        if per_group:
            return ctx.emit("ReduceSum", [ctx.emit("Reshape", [summed, ctx.ints([groups, -1])]), ctx.ints([1])],
                            keepdims=0)
        return summed

    dx = dscale = dbias = None
    if needs[0]:
        scale_c = scale
        if per_group:
            scale_c = ctx.emit("Reshape", [ctx.emit("Expand", [ctx.emit("Reshape", [scale, ctx.ints([groups, 1])]),
                                                               ctx.ints([groups, channels // groups])]), ctx.ints([-1])])
        g = ctx.emit("Mul", [dy, ctx.emit("Reshape", [scale_c, per_channel])])
        dx_g = normalized_grad(ctx, ctx.emit("Reshape", [g, ctx.ints([0, groups, -1])]), xhat_g, rstd, [2])
        dx = ctx.reshape_like(dx_g, x)
    if needs[1]:
        dscale = channel_sum(ctx.emit("Mul", [dy, xhat]))
    if needs[2]:
        dbias = channel_sum(dy)
    return [dx, dscale, dbias]
