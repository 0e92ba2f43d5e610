"""Per-channel weights that balance a squared-error distillation loss across the parts of one output.

A detector's output often stacks quantities of very different scale: YOLOv8's (N, 4 + K, anchors)
holds box coordinates in input pixels (variance ~1e4) beside class scores in [0, 1] (~1e-3). A plain
squared error is then almost all box error, and the held-out fidelity that picks the kept epoch tracks
the boxes, not the scores a detection is decided by (NudeNet 320n: the loss improved while face F1
fell). Weighting each channel's error by one over the teacher's variance of that channel makes every
channel count by its error relative to its own spread.

The channel axis is read from the teacher's outputs: of the non-batch axes, the one whose per-index
variances (pooled over the batch and the other axes) spread widest. A channel that barely varies (a
class that never fires on the data) is floored at a tenth of the median channel's variance, so no
channel weighs more than ten times the median one. The weights are scaled so that predicting each
channel's mean scores 1: the loss is the share of the teacher's variance the student misses.

Not the default (TrainSettings.distill stays "kl"): on NudeNet 320n it ended below plain squared error
on the face F1 (10.0 against 19.05 and 41.67; docs/benchmarks.md, "Issue 10's goal, fourth pass").
"""

from __future__ import annotations

import numpy as np

BALANCE_SAMPLES = 256   # teacher outputs the variances are measured on
FLOOR_OF_MEDIAN = 0.1   # a channel's variance is at least this share of the median channel's
BALANCE_SPREAD = 100.0  # channel variances spreading wider than this: the squared error is unbalanced


def channel_axis(out: np.ndarray) -> tuple[int, np.ndarray]:
    """(axis, per-index variances) of the non-batch axis whose variances spread widest; axis 0 for a
    rank-1 output (one channel)."""
    x = np.asarray(out, dtype=np.float64)
    if x.ndim < 2:
        return 0, np.asarray([x.var()])
    best = None
    for axis in range(1, x.ndim):
        var = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1).var(axis=1)
        spread = _spread(var)
        if best is None or spread > best[0]:
            best = (spread, axis, var)
    return best[1], best[2]


def spread(out: np.ndarray) -> float:
    """max / min of the channel variances (after the floor): how unbalanced a plain squared error is."""
    return _spread(channel_axis(out)[1])


def unbalanced(out: np.ndarray) -> bool:
    """True when a squared error on `out` would be dominated by a few channels and KL does not apply: the
    channel variances spread wider than BALANCE_SPREAD on an axis that is not the last one. Class logits
    (the channels on the last axis: a classifier's, a CTC recognizer's) spread widely too, because rare
    classes vary little (ddddocr's 8210 classes: 666x), but KL over that axis is the loss meant for them; a
    detector's (N, 4 + K, anchors) has its channels on axis 1 and nothing a softmax over anchors means."""
    axis, var = channel_axis(out)
    return np.ndim(out) >= 3 and axis != np.ndim(out) - 1 and _spread(var) > BALANCE_SPREAD


def balance_weights(out: np.ndarray) -> np.ndarray:
    """float32 weights that broadcast against `out` (batch axis 1): w_c = 1 / var_c, normalised."""
    x = np.asarray(out, dtype=np.float64)
    axis, var = channel_axis(x)
    weights = 1.0 / _floored(var)
    weights /= max(np.mean(weights * var), np.finfo(np.float64).tiny)  # predicting the channel means scores 1
    shape = [1] * max(x.ndim, 1)
    if x.ndim >= 2:
        shape[axis] = len(weights)
    return weights.reshape(shape).astype(np.float32)


def _floored(var: np.ndarray) -> np.ndarray:
    median = float(np.median(var))
    floor = FLOOR_OF_MEDIAN * median if median > 0 else 1.0
    return np.maximum(var, max(floor, np.finfo(np.float32).tiny))


def _spread(var: np.ndarray) -> float:
    var = _floored(var)
    return float(var.max() / var.min())


__all__ = ["balance_weights", "channel_axis", "spread", "unbalanced", "BALANCE_SAMPLES", "BALANCE_SPREAD"]
