"""numpy definitions of ONNX Runtime's contrib ops for onnx.reference, so gradcheck can take float64
finite differences through them (onnx.reference knows only standard ops). They follow ORT's CPU
kernels for the cases the gradient rules support. Also RNN with Relu/Sigmoid, which onnx.reference lacks.
"""

from __future__ import annotations

import math

import numpy as np
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_rnn import RNN_14 as _RNN


def _gelu(x: np.ndarray, tanh: bool) -> np.ndarray:
    if tanh:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return x * 0.5 * (1 + np.vectorize(math.erf, otypes=[x.dtype])(x / math.sqrt(2)))


def _norm(s: np.ndarray, axes: tuple[int, ...], eps: float, centre: bool) -> np.ndarray:
    if centre:
        s = s - s.mean(axis=axes, keepdims=True)
    return s / np.sqrt((s * s).mean(axis=axes, keepdims=True) + eps)


def _outputs(op: OpRun, *values) -> tuple:
    """As many outputs as the node names; statistics these references do not compute come out empty."""
    return tuple(np.zeros(0, values[0].dtype) if v is None else v for v in values[:len(op.onnx_node.output)])


class FastGelu(OpRun):
    op_domain = "com.microsoft"

    def _run(self, x, bias=None):
        return (_gelu(x if bias is None else x + bias, True).astype(x.dtype),)


class BiasGelu(OpRun):
    op_domain = "com.microsoft"

    def _run(self, a, b):
        return (_gelu(a + b, False).astype(a.dtype),)


class SkipLayerNormalization(OpRun):
    op_domain = "com.microsoft"

    def _run(self, x, skip, gamma, beta=None, bias=None, epsilon=1e-12):
        s = x + skip + (0 if bias is None else bias)
        y = _norm(s, (-1,), epsilon, True) * gamma + (0 if beta is None else beta)
        return _outputs(self, y.astype(x.dtype), None, None, s.astype(x.dtype))


class SkipSimplifiedLayerNormalization(OpRun):
    op_domain = "com.microsoft"

    def _run(self, x, skip, gamma, bias=None, epsilon=1e-12):
        s = x + skip + (0 if bias is None else bias)
        return _outputs(self, (_norm(s, (-1,), epsilon, False) * gamma).astype(x.dtype), None, None, s.astype(x.dtype))


class SimplifiedLayerNormalization(OpRun):
    op_domain = ""

    def _run(self, x, scale, axis=-1, epsilon=1e-5, stash_type=1):
        axes = tuple(range(axis % x.ndim, x.ndim))
        return _outputs(self, (_norm(x, axes, epsilon, False) * scale).astype(x.dtype), None)


class Attention(OpRun):
    op_domain = "com.microsoft"

    def _run(self, x, w, bias=None, mask=None, *rest, num_heads=1, scale=None, mask_filter_value=-10000.0, **_):
        b, s, _ = x.shape
        width = w.shape[1] // 3
        size = width // num_heads
        qkv = x @ w + (0 if bias is None else bias)
        q, k, v = (t.reshape(b, s, num_heads, size).transpose(0, 2, 1, 3) for t in np.split(qkv, 3, axis=-1))
        scores = q @ k.transpose(0, 1, 3, 2) * (scale or 1 / math.sqrt(size))
        if mask is not None:
            keep = np.arange(s)[None] < mask[:, None] if mask.ndim == 1 else mask > 0
            scores = scores + np.where(keep, 0.0, mask_filter_value)[:, None, None, :]
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out = (p @ v).transpose(0, 2, 1, 3).reshape(b, s, width)
        return _outputs(self, out.astype(x.dtype), None)


class EmbedLayerNormalization(OpRun):
    op_domain = "com.microsoft"

    def _run(self, ids, segments, word, position, segment_table=None, gamma=None, beta=None, mask=None,
             position_ids=None, epsilon=1e-12, **_):
        steps = ids.shape[1]
        e = word[ids] + (position[position_ids] if position_ids is not None else position[:steps][None])
        if segment_table is not None:
            e = e + segment_table[segments]
        y = _norm(e, (-1,), epsilon, True) * gamma + (0 if beta is None else beta)
        lengths = (mask.sum(1) if mask is not None else np.full(ids.shape[0], steps)).astype(np.int32)
        return _outputs(self, y.astype(word.dtype), lengths, e.astype(word.dtype))


class RNN(_RNN):
    """onnx.reference's RNN knows only Tanh and Affine; add the other activations the rules support
    (it applies the first activation to every direction)."""
    op_domain = ""

    def choose_act(self, name, alpha, beta):
        if name in ("Relu", "Sigmoid"):
            return (lambda x: np.maximum(x, 0)) if name == "Relu" else (lambda x: 1 / (1 + np.exp(-x)))
        return super().choose_act(name, alpha, beta)


CONTRIB_OPS = [RNN, EmbedLayerNormalization, FastGelu, BiasGelu, SkipLayerNormalization, SkipSimplifiedLayerNormalization,
               SimplifiedLayerNormalization, Attention]
