"""The fused ops ONNX Runtime's transformer optimizer emits (com.microsoft), besides Attention:
BiasGelu, FastGelu, SkipLayerNormalization, SkipSimplifiedLayerNormalization, EmbedLayerNormalization and the
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


def _scatter_rows(ctx: GradContext, table: str, ids: str, grad: str) -> str:
    """dTable of rows gathered by `ids`: every row of `grad` added into the row it came from."""
    width = ctx.shape(table)[1]
    rows = ctx.emit("Reshape", [grad, ctx.ints([-1, width])])
    flat = ctx.emit("Cast", [ctx.emit("Reshape", [ids, ctx.ints([-1, 1])])], to=7)
    spread = ctx.emit("Expand", [flat, ctx.shape_of(rows)])
    return ctx.emit("ScatterElements", [ctx.zeros_like(table), spread, rows], axis=0, reduction="add")


@GRADIENTS.register(MS + "EmbedLayerNormalization", inputs=(2, 3, 4, 5, 6), layer=True)
def embed_layer_norm(ctx, node, dys, needs):
    # e = word[ids] + position[position_ids or 0..S-1] + segment[segment_ids]; y = LN(e) * gamma + beta
    ids, segments, word, position = node.input(0), node.input(1), node.inputs[2], node.inputs[3]
    segment_table, gamma, beta, position_ids = node.input(4), node.inputs[5], node.input(6), node.input(8)
    steps = ctx.shape(ids)[1]
    emb = ctx.emit("Add", [ctx.emit("Gather", [word, ids]), ctx.emit("Gather", [position, position_ids])
                           if position_ids else ctx.emit("Slice", [position, ctx.ints([0]), ctx.ints([steps]),
                                                                   ctx.ints([0])])])
    if segment_table:
        emb = ctx.emit("Add", [emb, ctx.emit("Gather", [segment_table, segments])])
    shape = ctx.shape(node.outputs[0])
    demb = dys[2] if len(dys) > 2 else None
    grads: list[str | None] = [None] * len(node.inputs)
    if dys[0]:
        xhat, rstd = standardize(ctx, emb, [-1], float(attr(node, "epsilon", 1e-12)))
        dnorm = normalized_grad(ctx, ctx.emit("Mul", [dys[0], gamma]), xhat, rstd, [-1])
        demb = ctx.emit("Add", [demb, dnorm]) if demb else dnorm
        grads[5] = ctx.sum_to(ctx.emit("Mul", [dys[0], xhat]), shape, gamma)
        grads[6] = ctx.sum_to(dys[0], shape, beta) if beta else None
    grads[2] = _scatter_rows(ctx, word, ids, demb)
    if position_ids:
        grads[3] = _scatter_rows(ctx, position, ctx.emit("Expand", [position_ids, ctx.shape_of(ids)]), demb)
    else:  # rows 0..S-1, summed over the batch, padded to the table
        summed = ctx.emit("ReduceSum", [demb, ctx.ints([0])], keepdims=0)
        grads[3] = ctx.emit("Pad", [summed, ctx.ints([0, 0, ctx.shape(position)[0] - steps, 0])])
    if segment_table:
        grads[4] = _scatter_rows(ctx, segment_table, segments, demb)
    return grads
