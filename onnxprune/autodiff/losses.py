"""Loss heads: each emits the scalar loss and its gradient with respect to the logits.

Writing dLoss/dlogits in closed form (softmax minus target) is shorter and more accurate than
differentiating a LogSoftmax/NLL chain node by node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import BadInputError
from onnxprune.autodiff.context import GradContext
from onnxprune.autodiff.detect_loss import emit_detect, numpy_detect_loss

LOSSES = ("cross_entropy", "mse", "distill")
DISTILL_MODES = ("kl", "mse", "balanced", "detect", "binary")


@dataclass
class LossHead:
    loss: str                       # scalar loss tensor
    dlogits: str                    # gradient of the loss with respect to the logits
    target: onnx.ValueInfoProto     # the extra graph input: labels, targets or teacher logits


def emit_loss(ctx: GradContext, kind: str, logits: str, *, temperature: float = 1.0, distill: str = "kl",
              label_smoothing: float = 0.0, balance: np.ndarray | None = None) -> LossHead:
    """`balance` (distill="balanced"): per-element weights of the squared error, broadcast against the
    output with its batch axis at 1 (recover/distill_weights.py: one over each channel's teacher variance)."""
    if kind not in LOSSES:
        raise BadInputError(f"unknown loss '{kind}'; choose one of {', '.join(LOSSES)}")
    if kind == "distill" and distill not in DISTILL_MODES:
        raise BadInputError(f"unknown distillation loss '{distill}'; choose one of {', '.join(DISTILL_MODES)}")
    shape = ctx.shape(logits)
    elem = ctx.elem_type(logits)
    if kind == "cross_entropy":
        target = ctx.reserve("labels")
        info = helper.make_tensor_value_info(target, onnx.TensorProto.INT64, ["N"] + list(shape[1:-1]))
        return _cross_entropy(ctx, logits, target, info, label_smoothing)
    target = ctx.reserve("teacher_logits" if kind == "distill" else "targets")
    info = helper.make_tensor_value_info(target, elem, ["N"] + list(shape[1:]))
    if kind == "distill" and distill == "balanced":
        if balance is None:
            raise BadInputError("the balanced distillation loss needs per-channel weights (balance)")
        return _mse(ctx, logits, target, info, np.asarray(balance, dtype=ctx.np_dtype(logits)))
    if kind == "distill" and distill == "detect":  # `balance` is a DetectSpec (autodiff/detect_loss.py)
        if balance is None:
            raise BadInputError("the detect distillation loss needs its output parts (a DetectSpec as balance)")
        return LossHead(*emit_detect(ctx, logits, target, balance), info)
    if kind == "mse" or distill == "mse":
        return _mse(ctx, logits, target, info)
    if distill == "binary":
        return _binary_kl(ctx, logits, target, info, float(temperature))
    return _kl(ctx, logits, target, info, float(temperature))


def _rows(ctx: GradContext, flat: str, like: str) -> str:
    """The number of rows of a 2-D tensor as a scalar of `like`'s type (the batch varies)."""
    first = ctx.emit("Gather", [ctx.shape_of(flat), ctx.const(np.asarray(0, dtype=np.int64))])
    return ctx.emit("Cast", [first], to=ctx.elem_type(like))


def _as_rows(ctx: GradContext, tensor: str, classes: int) -> str:
    return ctx.emit("Reshape", [tensor, ctx.ints([-1, classes])])


def _cross_entropy(ctx, logits, labels, info, smoothing) -> LossHead:
    classes = ctx.shape(logits)[-1]
    dtype = ctx.np_dtype(logits)
    flat = _as_rows(ctx, logits, classes)
    log_p = ctx.emit("LogSoftmax", [flat], axis=1)
    hot = np.asarray([smoothing / classes, 1.0 - smoothing + smoothing / classes], dtype=dtype)
    flat_labels = ctx.emit("Reshape", [labels, ctx.ints([-1])])
    target = ctx.emit("OneHot", [flat_labels, ctx.ints([classes]), ctx.const(hot, "onehot")], axis=-1)
    rows = _rows(ctx, flat, logits)
    total = ctx.emit("ReduceSum", [ctx.emit("Mul", [target, log_p])], keepdims=0)
    loss = ctx.emit("Neg", [ctx.emit("Div", [total, rows])])
    grad = ctx.emit("Div", [ctx.emit("Sub", [ctx.emit("Exp", [log_p]), target]), rows])
    return LossHead(loss, ctx.reshape_like(grad, logits), info)


def _mse(ctx, logits, targets, info, weights: np.ndarray | None = None) -> LossHead:
    # loss = mean(w * (y - t)^2); dy = 2 w (y - t) / size (w = 1 without weights)
    diff = ctx.emit("Sub", [logits, targets])
    count = ctx.emit("Cast", [ctx.emit("Size", [logits])], to=ctx.elem_type(logits))
    weighted = diff if weights is None else ctx.emit("Mul", [diff, ctx.const(weights, "balance")])
    loss = ctx.emit("Div", [ctx.emit("ReduceSum", [ctx.emit("Mul", [weighted, diff])], keepdims=0), count])
    grad = ctx.emit("Div", [ctx.emit("Mul", [weighted, ctx.scalar(2.0, logits)]), count])
    return LossHead(loss, grad, info)


def _kl(ctx, logits, teacher, info, temperature) -> LossHead:
    # loss = T^2 * mean over rows of KL(softmax(t/T) || softmax(z/T)); dz = T (softmax(z/T) - softmax(t/T)) / rows
    classes = ctx.shape(logits)[-1]
    t = ctx.scalar(temperature, logits)
    student = ctx.emit("LogSoftmax", [_as_rows(ctx, ctx.emit("Div", [logits, t]), classes)], axis=1)
    target = ctx.emit("LogSoftmax", [_as_rows(ctx, ctx.emit("Div", [teacher, t]), classes)], axis=1)
    p_target = ctx.emit("Exp", [target])
    rows = _rows(ctx, student, logits)
    kl = ctx.emit("ReduceSum", [ctx.emit("Mul", [p_target, ctx.emit("Sub", [target, student])])], keepdims=0)
    loss = ctx.emit("Mul", [ctx.emit("Div", [kl, rows]), ctx.scalar(temperature * temperature, logits)])
    diff = ctx.emit("Sub", [ctx.emit("Exp", [student]), p_target])
    grad = ctx.emit("Mul", [ctx.emit("Div", [diff, rows]), t])
    return LossHead(loss, ctx.reshape_like(grad, logits), info)


def _binary_kl(ctx, logits, teacher, info, temperature) -> LossHead:
    # each element a yes/no score: loss = T^2 * mean over elements of KL(sigmoid(t/T) || sigmoid(z/T));
    # log sigmoid(a) = -softplus(-a), log(1 - sigmoid(a)) = -softplus(a); dz = T (sigmoid(z/T) - sigmoid(t/T)) / count
    t = ctx.scalar(temperature, logits)
    a, b = ctx.emit("Div", [teacher, t]), ctx.emit("Div", [logits, t])
    p = ctx.emit("Sigmoid", [a])
    neg = ctx.scalar(-1.0, logits)
    yes = ctx.emit("Sub", [ctx.emit("Softplus", [ctx.emit("Mul", [b, neg])]), ctx.emit("Softplus", [ctx.emit("Mul", [a, neg])])])
    no = ctx.emit("Sub", [ctx.emit("Softplus", [b]), ctx.emit("Softplus", [a])])
    one_minus_p = ctx.emit("Sub", [ctx.scalar(1.0, logits), p])
    kl = ctx.emit("Add", [ctx.emit("Mul", [p, yes]), ctx.emit("Mul", [one_minus_p, no])])
    count = ctx.emit("Cast", [ctx.emit("Size", [logits])], to=ctx.elem_type(logits))
    loss = ctx.emit("Mul", [ctx.emit("Div", [ctx.emit("ReduceSum", [kl], keepdims=0), count]),
                            ctx.scalar(temperature * temperature, logits)])
    grad = ctx.emit("Div", [ctx.emit("Mul", [ctx.emit("Sub", [ctx.emit("Sigmoid", [b]), p]), t]), count])
    return LossHead(loss, grad, info)


def numpy_binary_kl(z: np.ndarray, t: np.ndarray, temperature: float) -> float:
    """The binary distillation loss in float64 (validation, tests)."""
    a, b = np.asarray(t, np.float64) / temperature, np.asarray(z, np.float64) / temperature
    p = 1.0 / (1.0 + np.exp(-a))
    kl = p * (np.logaddexp(0, -b) - np.logaddexp(0, -a)) + (1 - p) * (np.logaddexp(0, b) - np.logaddexp(0, a))
    return float(temperature * temperature * np.mean(kl)) if kl.size else float("nan")


# float64 values per row block of the class-score losses below: their temporaries (about ten arrays of the block)
# stay near 80 MB, where a whole batch of a CTC line reader (32 x 40 x 6625) took 390 MB above training's bound
BLOCK_ELEMENTS = 1 << 20


def numpy_loss(kind: str, logits: np.ndarray, target: np.ndarray, temperature: float = 1.0, distill: str = "kl",
               label_smoothing: float = 0.0, balance: np.ndarray | None = None) -> float:
    """The same loss heads in float64 numpy (finite-difference checks, validation loss)."""
    if kind == "distill" and distill == "detect":
        return numpy_detect_loss(np.asarray(logits, dtype=np.float64), target, balance)
    if kind == "distill" and distill == "balanced":
        y = np.asarray(logits, dtype=np.float64)
        return float(np.mean(np.asarray(balance, dtype=np.float64) * (y - target) ** 2))
    if kind == "mse" or (kind == "distill" and distill == "mse"):
        return float(np.mean((np.asarray(logits, dtype=np.float64) - target) ** 2))
    if kind == "distill" and distill == "binary":
        return numpy_binary_kl(logits, target, temperature)
    classes = np.shape(logits)[-1]
    z = np.asarray(logits).reshape(-1, classes)
    target = np.asarray(target).reshape(-1) if kind == "cross_entropy" else np.asarray(target).reshape(-1, classes)
    step = max(1, BLOCK_ELEMENTS // classes)  # the rows' sum taken a block at a time: the same loss, bounded memory
    total = sum(_rows_loss(kind, z[i:i + step].astype(np.float64), target[i:i + step], temperature, label_smoothing)
                for i in range(0, len(z), step))
    return float(total / len(z)) if len(z) else float("nan")


def _rows_loss(kind: str, z: np.ndarray, target: np.ndarray, t: float, label_smoothing: float) -> float:
    """The summed loss of these rows (class scores per row); numpy_loss divides by all rows."""
    classes = z.shape[-1]
    if kind == "cross_entropy":
        log_p = z - _logsumexp(z)
        hot = np.full(z.shape, label_smoothing / classes)
        hot[np.arange(len(z)), target] += 1.0 - label_smoothing
        return float(-np.sum(hot * log_p))
    log_s = z / t - _logsumexp(z / t)
    zt = target.astype(np.float64) / t
    log_t = zt - _logsumexp(zt)
    return float(t * t * np.sum(np.exp(log_t) * (log_t - log_s)))


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
