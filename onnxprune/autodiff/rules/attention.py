"""com.microsoft Attention (ONNX Runtime's fused self-attention, as its transformer optimizer emits it).

    qkv = input W + bias;  q, k, v split and cut into heads;  P = softmax(q k^T * scale + mask);
    out = P v with the heads joined again.

The forward node stays; the backward recomputes q, k, v and P in standard ops (one GEMM, one batched
MatMul and a Softmax) and runs the usual attention backward. Masks: none, a 2-D 0/1 key mask
(batch, keys) or a 1-D list of valid lengths (batch,). Refused by name: past state, attention
bias, unidirectional (causal), unequal qkv_hidden_sizes, rotary embeddings.
"""

from __future__ import annotations

import math

import numpy as np

from onnxprune.autodiff.context import GradContext, attr
from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()
HEADS = [0, 2, 1, 3]  # (B, S, heads, d) <-> (B, heads, S, d)


def _check(ctx, node) -> str | None:
    extra = [i for i in range(4, len(node.inputs)) if node.inputs[i]]
    if extra:
        return "Attention with past state or attention bias has no gradient rule"
    if int(attr(node, "unidirectional", 0)) or int(attr(node, "do_rotary", 0)):
        return "Attention with unidirectional or do_rotary has no gradient rule"
    sizes = attr(node, "qkv_hidden_sizes", None)
    if sizes and len(set(sizes)) != 1:
        return "Attention with unequal qkv_hidden_sizes has no gradient rule"
    mask = node.input(3)
    if mask and len(ctx.shape(mask)) not in (1, 2):
        return "Attention with a 3-D or 4-D mask has no gradient rule"
    if len([t for t in node.outputs if t]) > 1:
        return "Attention with a present output has no gradient rule"
    return None


def _mask_bias(ctx: GradContext, node, like: str) -> str | None:
    """(B, 1, 1, S) additive mask: 0 where a key is attended, mask_filter_value where it is not."""
    mask = node.input(3)
    if not mask:
        return None
    keys = ctx.shape(node.inputs[0])[1]
    if len(ctx.shape(mask)) == 1:  # valid lengths: key j is attended when j < length
        lengths = ctx.emit("Unsqueeze", [ctx.emit("Cast", [mask], to=7), ctx.ints([1])])
        keep = ctx.emit("Less", [ctx.const(np.arange(keys, dtype=np.int64)[None], "positions"), lengths])
    else:
        keep = ctx.emit("Greater", [mask, ctx.const(np.zeros((), ctx.np_dtype(mask)), "zero")])
    dropped = ctx.emit("Sub", [ctx.scalar(1.0, like), ctx.emit("CastLike", [keep, like])])
    bias = ctx.emit("Mul", [dropped, ctx.scalar(float(attr(node, "mask_filter_value", -10000.0)), like)])
    return ctx.emit("Unsqueeze", [bias, ctx.ints([1, 2])])


@GRADIENTS.register("com.microsoft.Attention", inputs=(0, 1, 2), check=_check, layer=True)
def attention(ctx, node, dys, needs):
    x, w = node.inputs[:2]
    bias = node.input(2)
    heads = int(attr(node, "num_heads"))
    width = ctx.shape(w)[1] // 3
    size = width // heads
    scale = attr(node, "scale", None) or 1.0 / math.sqrt(size)

    def split_heads(t: str) -> str:
        return ctx.emit("Transpose", [ctx.emit("Reshape", [t, ctx.ints([0, 0, heads, size])])], perm=HEADS)

    def join_heads(t: str) -> str:
        return ctx.emit("Reshape", [ctx.emit("Transpose", [t], perm=HEADS), ctx.ints([0, 0, width])])

    def mm(a: str, b: str, ta: bool = False, tb: bool = False) -> str:
        a = ctx.transpose_last2(a, 4) if ta else a
        return ctx.emit("MatMul", [a, ctx.transpose_last2(b, 4) if tb else b])

    qkv = ctx.emit("MatMul", [x, w])
    if bias:
        qkv = ctx.emit("Add", [qkv, bias])
    q, k, v = (split_heads(t) for t in ctx.emit("Split", [qkv, ctx.ints([width] * 3)], outputs=3, axis=2))
    scores = ctx.emit("Mul", [mm(q, k, tb=True), ctx.scalar(scale, x)])
    mask = _mask_bias(ctx, node, x)
    p = ctx.emit("Softmax", [ctx.emit("Add", [scores, mask]) if mask else scores], axis=-1)
    dctx = split_heads(dys[0])
    dp = mm(dctx, v, tb=True)
    dv = mm(p, dctx, ta=True)
    centred = ctx.emit("Sub", [dp, ctx.emit("ReduceSum", [ctx.emit("Mul", [dp, p]), ctx.ints([-1])], keepdims=1)])
    ds = ctx.emit("Mul", [ctx.emit("Mul", [p, centred]), ctx.scalar(scale, x)])
    dq, dk = mm(ds, k), mm(ds, q, ta=True)
    dqkv = ctx.emit("Concat", [join_heads(dq), join_heads(dk), join_heads(dv)], axis=2)
    din = ctx.shape(x)[-1]
    dx = ctx.emit("MatMul", [dqkv, ctx.emit("Transpose", [w], perm=[1, 0])]) if needs[0] else None
    dw = ctx.emit("Gemm", [ctx.emit("Reshape", [x, ctx.ints([-1, din])]),
                           ctx.emit("Reshape", [dqkv, ctx.ints([-1, 3 * width])])], transA=1) if needs[1] else None
    db = ctx.emit("ReduceSum", [dqkv, ctx.ints([0, 1])], keepdims=0) if len(needs) > 2 and needs[2] else None
    return [dx, dw, db][:len(node.inputs)]
