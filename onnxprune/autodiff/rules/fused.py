"""The fused ops ONNX Runtime's transformer optimizer emits (com.microsoft), besides Attention:
BiasGelu, FastGelu, SkipLayerNormalization, SkipSimplifiedLayerNormalization, and the
default-domain contrib op SimplifiedLayerNormalization (RMSNorm). The forward node stays; its
statistics are recomputed in standard ops (the optional mean/inv_std_var outputs are not relied on).
"""

from __future__ import annotations

from onnxprune.autodiff.context import GradContext, attr
from onnxprune.autodiff.rule import RuleTable
from onnxprune.autodiff.rules.activation import gelu_slope
from onnxprune.autodiff.rules.norm import normalized_grad, standardize

GRADIENTS = RuleTable()
MS = "com.microsoft."


def _biased_gelu(ctx: GradContext, node, dys, tanh: bool) -> list[str | None]:
    x, bias = node.inputs[0], node.input(1)
    z = ctx.emit("Add", [x, bias]) if bias else x
    dz = ctx.emit("Mul", [dys[0], gelu_slope(ctx, z, tanh)])
    shape = ctx.shape(node.outputs[0])
    return [ctx.sum_to(dz, shape, x)] + ([ctx.sum_to(dz, shape, bias)] if bias else [])


@GRADIENTS.register(MS + "FastGelu", inputs=(0, 1), layer=True)
def fast_gelu(ctx, node, dys, needs):
    return _biased_gelu(ctx, node, dys, tanh=True)


@GRADIENTS.register(MS + "BiasGelu", inputs=(0, 1), layer=True)
def bias_gelu(ctx, node, dys, needs):
    return _biased_gelu(ctx, node, dys, tanh=False)


def _rms(ctx: GradContext, x: str, axes: list[int], eps: float) -> tuple[str, str]:
    """(x * rstd, rstd) with rstd = 1 / sqrt(mean(x^2) + eps) over `axes`."""
    ms = ctx.reduce("ReduceMean", ctx.emit("Mul", [x, x]), axes)
    rstd = ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.emit("Add", [ms, ctx.scalar(eps, x)])])])
    return ctx.emit("Mul", [x, rstd]), rstd


def _rms_grad(ctx: GradContext, g: str, xhat: str, rstd: str, axes: list[int]) -> str:
    """dx of xhat = x * rstd (no centring): rstd (g - xhat mean(g xhat))."""
    m = ctx.reduce("ReduceMean", ctx.emit("Mul", [g, xhat]), axes)
    return ctx.emit("Mul", [rstd, ctx.emit("Sub", [g, ctx.emit("Mul", [xhat, m])])])


def _skip_norm(ctx: GradContext, node, dys, simplified: bool) -> list[str | None]:
    # s = input + skip (+ bias); y = norm(s) * gamma (+ beta); output 3 is s itself
    x, skip, gamma = node.inputs[:3]
    beta = None if simplified else node.input(3)
    bias = node.input(3 if simplified else 4)
    eps = float(attr(node, "epsilon", 1e-12))
    s = ctx.emit("Add", [x, skip])
    if bias:
        s = ctx.emit("Add", [s, bias])
    shape = ctx.shape(x)  # every output has the input's shape
    ds = dys[3] if len(dys) > 3 else None
    dgamma = dbeta = None
    if dys[0]:
        xhat, rstd = (_rms if simplified else standardize)(ctx, s, [-1], eps)
        g = ctx.emit("Mul", [dys[0], gamma])
        dnorm = (_rms_grad if simplified else normalized_grad)(ctx, g, xhat, rstd, [-1])
        ds = ctx.emit("Add", [ds, dnorm]) if ds else dnorm
        dgamma = ctx.sum_to(ctx.emit("Mul", [dys[0], xhat]), shape, gamma)
        dbeta = ctx.sum_to(dys[0], shape, beta) if beta else None
    grads = [ctx.sum_to(ds, shape, x), ctx.sum_to(ds, shape, skip), dgamma]
    if not simplified:
        grads.append(dbeta)
    if bias:
        grads.append(ctx.sum_to(ds, shape, bias))
    return grads[:len(node.inputs)]


def _check_skip(ctx, node) -> str | None:
    if any(t and ctx.g.consumers.get(t) for t in node.outputs[1:3]):
        return f"{node.op} whose mean or inv_std_var outputs are read has no gradient rule"
    return None


@GRADIENTS.register(MS + "SkipLayerNormalization", inputs=(0, 1, 2, 3, 4), check=_check_skip, layer=True)
def skip_layer_norm(ctx, node, dys, needs):
    return _skip_norm(ctx, node, dys, simplified=False)


@GRADIENTS.register(MS + "SkipSimplifiedLayerNormalization", inputs=(0, 1, 2, 3), check=_check_skip, layer=True)
def skip_simplified_layer_norm(ctx, node, dys, needs):
    return _skip_norm(ctx, node, dys, simplified=True)


@GRADIENTS.register("SimplifiedLayerNormalization", inputs=(0, 1), layer=True)
def simplified_layer_norm(ctx, node, dys, needs):
    # y = x / sqrt(mean(x^2) + eps) * scale over axes [axis, rank)
    x, scale = node.inputs[:2]
    rank = ctx.rank(x)
    axes = list(range(int(attr(node, "axis", -1)) % rank, rank))
    xhat, rstd = _rms(ctx, x, axes, float(attr(node, "epsilon", 1e-5)))
    dx = _rms_grad(ctx, ctx.emit("Mul", [dys[0], scale]), xhat, rstd, axes) if needs[0] else None
    dscale = ctx.sum_to(ctx.emit("Mul", [dys[0], xhat]), ctx.shape(node.outputs[0]), scale) if needs[1] else None
    return [dx, dscale]
