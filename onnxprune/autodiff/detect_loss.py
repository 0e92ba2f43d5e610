"""A detection-aware distillation loss for an output whose rows pack parts of different units.

A YOLO-style head (N, 4 + C, anchors) packs box rows (pixels) and class rows (sigmoid probabilities) into
one tensor. Plain squared error is all box error (pixels dwarf probabilities); per-channel balancing
(distill="balanced") fixes the units but still spends the loss on the thousands of background anchors,
where no detection is decided. This loss, given a DetectSpec (recover/detect_distill.py finds one):

- score rows (the rows of parts whose teacher values lie in [0, 1]) are distilled by binary KL against the
  teacher's probabilities, t log(t/y) + (1-t) log((1-t)/(1-y)), averaged over all entries: its gradient
  through the head's Sigmoid is y - t in logit space, so a missed face (t 0.6, y 0.05) pulls hard and
  agreeing background (both ~1e-4) not at all;
- every other row is distilled by squared error weighted per anchor by the teacher's confidence there
  (the largest score over the score rows: foreground-weighted distillation), normalised by the total
  weight of the batch, so boxes count where the teacher sees an object;
- each part p is divided by its scale s_p (its error at the start of training), so every part starts at
  1 and weighs alike: L = sum_p L_p / s_p;
- options for the score rows (DetectSpec.score_weight, .focus): the score term times score_weight, and a
  confident-anchor term, the score rows' KL weighted per anchor by the teacher's largest score (as the box
  rows are), divided by its own start value and weighted by focus (0: off). Where a pruned head loses its
  detections is the few anchors the teacher fires on; the all-anchor mean also answers to the background.

Without score rows every anchor weighs 1 and the loss is squared error balanced per part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TINY = 1e-30  # floor of y (1 - y) and of the logs: float32 keeps it, so y - t survives the Sigmoid's backward
WEIGHT_EPS = 1e-12  # added to the batch's total anchor weight (a batch with no confident anchor)


@dataclass
class DetectSpec:
    """What the loss needs about the output: its row axis, each row's part, which parts are scores, and
    each part's scale. `rows[r]` is the part index of row r."""

    axis: int                  # the row axis of the (batch-first) output
    rows: np.ndarray           # (R,) int: part of each row
    score: np.ndarray          # (P,) bool: the part holds scores in [0, 1]
    scale: np.ndarray          # (P,) float: divides each part's term
    score_weight: float = 1.0  # multiplies the score rows' all-anchor KL term
    focus: float = 0.0         # weight of the score rows' confident-anchor KL term (focus_term); 0: off
    focus_scale: float = 1.0   # divides focus_term (its value at the start of training)

    def masks(self, rank: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(score mask, regression coefficients), each shaped to broadcast on the row axis: 1 on score
        rows; 1 / (rows in the part * scale) on the other rows."""
        counts = np.bincount(self.rows, minlength=len(self.scale)).astype(np.float64)
        is_score = self.score[self.rows]
        coef = np.where(is_score, 0.0, 1.0 / (counts[self.rows] * self.scale[self.rows]))
        shape = [1] * rank
        shape[self.axis] = len(self.rows)
        return is_score.astype(dtype).reshape(shape), coef.astype(dtype).reshape(shape)

    def score_coef(self) -> float:
        """1 / (score rows * the score parts' scale): the score term's factor (one scale for all score rows)."""
        if not self.score.any():
            return 0.0
        n = int(self.score[self.rows].sum())
        return float(self.score_weight / (n * float(np.mean(self.scale[self.score]))))

    def focus_coef(self) -> float:
        """focus / (score rows * focus_scale): the confident-anchor term's factor (0 without it)."""
        if not self.score.any() or not self.focus:
            return 0.0
        return float(self.focus / (int(self.score[self.rows].sum()) * self.focus_scale))


def anchor_weights(target: np.ndarray, spec: DetectSpec) -> np.ndarray:
    """The teacher's largest score per anchor (keepdims on the row axis); 1 everywhere without score rows."""
    t = np.asarray(target, dtype=np.float64)
    score, _ = spec.masks(t.ndim, np.float64)
    if not spec.score.any():
        return np.ones_like(np.sum(t, axis=spec.axis, keepdims=True))
    return np.max(t * score, axis=spec.axis, keepdims=True)


def part_terms(y: np.ndarray, target: np.ndarray, spec: DetectSpec) -> np.ndarray:
    """Each part's term before its scale (float64): the mean binary KL over all score rows (the same figure
    for every score part), each other part's anchor-weighted mean squared error."""
    y, t = np.asarray(y, dtype=np.float64), np.asarray(target, dtype=np.float64)
    w = anchor_weights(t, spec)
    out = np.zeros(len(spec.scale))
    scores = np.flatnonzero(spec.score[spec.rows])
    if len(scores):  # one mean over every score row: the loss's score term is one term
        joint = np.take(y, scores, axis=spec.axis), np.take(t, scores, axis=spec.axis)
        out[spec.score] = float(np.mean(binary_kl(np.clip(joint[0], 0.0, 1.0), joint[1])))
    for p in np.flatnonzero(~spec.score):
        idx = np.flatnonzero(spec.rows == p)
        yp, tp = np.take(y, idx, axis=spec.axis), np.take(t, idx, axis=spec.axis)
        out[p] = float(np.sum(w * (yp - tp) ** 2) / len(idx) / (np.sum(w) + WEIGHT_EPS))
    return out


def focus_term(y: np.ndarray, target: np.ndarray, spec: DetectSpec) -> float:
    """The score rows' binary KL weighted per anchor by the teacher's largest score, per score row and
    normalised by the total weight (float64; 0 without score rows), before focus and focus_scale."""
    if not spec.score.any():
        return 0.0
    y, t = np.asarray(y, dtype=np.float64), np.asarray(target, dtype=np.float64)
    score, _ = spec.masks(y.ndim, np.float64)
    w = anchor_weights(t, spec)
    kl = np.sum(score * w * binary_kl(np.clip(y, 0.0, 1.0), t))
    return float(kl / int(spec.score[spec.rows].sum()) / (np.sum(w) + WEIGHT_EPS))


def binary_kl(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """t log(t / y) + (1 - t) log((1 - t) / (1 - y)), elementwise, logs floored at TINY."""
    return (t * (np.log(np.maximum(t, TINY)) - np.log(np.maximum(y, TINY)))
            + (1 - t) * (np.log(np.maximum(1 - t, TINY)) - np.log(np.maximum(1 - y, TINY))))


def numpy_detect_loss(y: np.ndarray, target: np.ndarray, spec: DetectSpec) -> float:
    """The loss in float64 (validation, finite-difference checks): sum_p term_p / scale_p. The score parts
    share one mean over all their rows, so their term is computed together."""
    y, t = np.asarray(y, dtype=np.float64), np.asarray(target, dtype=np.float64)
    score, coef = spec.masks(y.ndim, np.float64)
    w = anchor_weights(t, spec)
    reg = float(np.sum(coef * w * (y - t) ** 2) / (np.sum(w) + WEIGHT_EPS))
    cls = float(np.sum(score * binary_kl(np.clip(y, 0.0, 1.0), t)) / (y.size / y.shape[spec.axis])) * spec.score_coef()
    focus = focus_term(y, t, spec) * spec.focus / spec.focus_scale if spec.focus_coef() else 0.0
    return reg + cls + focus


def emit_detect(ctx, logits: str, target: str, spec: DetectSpec) -> tuple[str, str]:
    """(the scalar loss, its gradient with respect to `logits`) as graph tensors."""
    rank = ctx.rank(logits)
    dtype = ctx.np_dtype(logits)
    score, coef = spec.masks(rank, dtype)
    diff = ctx.emit("Sub", [logits, target])
    # anchor weights from the teacher's scores (a graph input: no gradient flows into them)
    if spec.score.any():
        w = ctx.reduce("ReduceMax", ctx.emit("Mul", [target, ctx.const(score, "score_rows")]), [spec.axis])
    else:  # ones shaped like the anchors
        zeros = ctx.reduce("ReduceSum", ctx.emit("Mul", [target, ctx.scalar(0.0, logits)]), [spec.axis])
        w = ctx.emit("Add", [zeros, ctx.scalar(1.0, logits)])
    total_w = ctx.emit("Add", [ctx.emit("ReduceSum", [w], keepdims=0), ctx.scalar(WEIGHT_EPS, logits)])
    cw = ctx.emit("Mul", [ctx.emit("Mul", [diff, ctx.const(coef, "part_coef")]), w])  # coef * w * (y - t)
    reg = ctx.emit("Div", [ctx.emit("ReduceSum", [ctx.emit("Mul", [cw, diff])], keepdims=0), total_w])
    grad = ctx.emit("Div", [ctx.emit("Mul", [cw, ctx.scalar(2.0, logits)]), total_w])
    if not spec.score.any():
        return reg, grad
    # score rows: binary KL; per-entry count = size / rows (the anchors of the batch)
    anchors = ctx.emit("Div", [ctx.emit("Cast", [ctx.emit("Size", [logits])], to=ctx.elem_type(logits)),
                               ctx.scalar(float(len(spec.rows)), logits)])
    factor = ctx.emit("Div", [ctx.scalar(spec.score_coef(), logits), anchors])
    one, tiny = ctx.scalar(1.0, logits), ctx.scalar(TINY, logits)
    y = ctx.emit("Clip", [logits, ctx.scalar(0.0, logits), one])
    not_y, not_t = ctx.emit("Sub", [one, y]), ctx.emit("Sub", [one, target])

    def log_floored(x):
        return ctx.emit("Log", [ctx.emit("Max", [x, tiny])])
    kl = ctx.emit("Add", [ctx.emit("Mul", [target, ctx.emit("Sub", [log_floored(target), log_floored(y)])]),
                          ctx.emit("Mul", [not_t, ctx.emit("Sub", [log_floored(not_t), log_floored(not_y)])])])
    score_rows = ctx.const(score, "score_rows")
    cls = ctx.emit("Mul", [ctx.emit("ReduceSum", [ctx.emit("Mul", [kl, score_rows])], keepdims=0), factor])
    # d/dy = (y - t) / (y (1 - y)), floored; times the head's Sigmoid derivative y (1 - y) it is y - t
    dcls = ctx.emit("Div", [ctx.emit("Sub", [y, target]), ctx.emit("Max", [ctx.emit("Mul", [y, not_y]), tiny])])
    dkl = ctx.emit("Mul", [dcls, score_rows])
    loss, dy = ctx.emit("Add", [reg, cls]), ctx.emit("Add", [grad, ctx.emit("Mul", [dkl, factor])])
    if spec.focus_coef():  # the confident-anchor term: KL and its gradient weighted by w / sum(w)
        fw = ctx.emit("Div", [ctx.emit("Mul", [w, ctx.scalar(spec.focus_coef(), logits)]), total_w])
        fkl = ctx.emit("ReduceSum", [ctx.emit("Mul", [ctx.emit("Mul", [kl, score_rows]), fw])], keepdims=0)
        loss, dy = ctx.emit("Add", [loss, fkl]), ctx.emit("Add", [dy, ctx.emit("Mul", [dkl, fw])])
    return loss, dy


__all__ = ["DetectSpec", "anchor_weights", "binary_kl", "emit_detect", "focus_term", "numpy_detect_loss", "part_terms",
           "TINY"]
