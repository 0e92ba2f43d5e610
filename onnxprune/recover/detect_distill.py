"""The DetectSpec of the detect distillation loss (autodiff/detect_loss.py), read off the models' outputs.

On up to DETECT_SAMPLES training samples: the row axis is the one whose per-index variances spread widest
(distill_weights.channel_axis); the rows split into parts where their standard deviations jump by more
than PART_GAP (score/output_parts.py, as fisher's probes and the fidelity report split them); a part
whose teacher values all lie in [0, 1] holds scores. Each part's scale is the student's term on these
samples at the start of training, so every part starts at 1; a part the pruning barely touched is not
blown up past 1e6 times its trivial error (predicting each row's mean). The score rows' confident-anchor
term (detect_loss.focus_term, used when focus > 0) gets its start value as its scale the same way.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

from onnxprune.autodiff.detect_loss import DetectSpec, focus_term, part_terms
from onnxprune.errors import BadInputError
from onnxprune.load.data import Dataset
from onnxprune.recover.distill_weights import channel_axis
from onnxprune.recover.targets import spread_outputs
from onnxprune.score.output_parts import parts

log = logging.getLogger("onnxprune")
DETECT_SAMPLES = 64     # samples the parts and scales are measured on
SCALE_FLOOR = 1e-6      # a part's scale is at least this share of its trivial error


def _parts_and_scores(t: np.ndarray) -> tuple[int, list, np.ndarray]:
    """(row axis, parts, which parts hold scores in [0, 1]) of a batch-first teacher output."""
    axis, var = channel_axis(t)
    found = parts({"out": np.sqrt(var)})
    score = np.asarray([np.take(t, idx, axis=axis).min() >= 0.0 and np.take(t, idx, axis=axis).max() <= 1.0
                        for _, idx in found], dtype=bool)
    return axis, found, score


def packed_scores(t: np.ndarray) -> bool:
    """True when a batch-first output packs a detector's rows: the rows (an axis that is not the last,
    distill_weights.unbalanced) split into parts of which some hold scores in [0, 1] and some do not
    (YOLOv8's (N, 4 + K, anchors): pixel boxes beside class scores). What `distill="auto"` reads as a
    detector's head, for which KL over the last axis (a softmax over anchors) means nothing."""
    from onnxprune.recover.distill_weights import unbalanced
    t = np.asarray(t, dtype=np.float64)
    if not unbalanced(t):
        return False
    _, _, score = _parts_and_scores(t)
    return bool(score.any() and not score.all())


def spec_from_outputs(student_out: np.ndarray, teacher_out: np.ndarray, score_weight: float = 1.0,
                      focus: float = 0.0) -> DetectSpec:
    """Parts, score parts and scales of a batch-first output (module docstring); score_weight and focus as
    in DetectSpec."""
    if not (np.isfinite(score_weight) and score_weight >= 0 and np.isfinite(focus) and focus >= 0):
        raise BadInputError(f"the detect loss's score weight and focus must be >= 0, got {score_weight} and {focus}")
    t = np.asarray(teacher_out, dtype=np.float64)
    if t.ndim < 2:
        raise BadInputError("the detect distillation loss needs an output with a row axis (rank >= 2)")
    axis, found, score = _parts_and_scores(t)
    rows = np.zeros(t.shape[axis], dtype=np.int64)
    for p, (_, idx) in enumerate(found):
        rows[idx] = p
    plain = DetectSpec(axis, rows, score, np.ones(len(found)))
    start = part_terms(student_out, t, plain)
    mean = np.broadcast_to(t.mean(axis=tuple(i for i in range(t.ndim) if i != axis), keepdims=True), t.shape)
    trivial = part_terms(mean, t, plain)
    scale = np.maximum(start, np.maximum(SCALE_FLOOR * trivial, 1e-30))
    focus_scale = max(focus_term(student_out, t, plain), SCALE_FLOOR * focus_term(mean, t, plain), 1e-30)
    log.info("detect distillation: %d output parts on axis %d (%s), start terms %s",
             len(found), axis, ", ".join(f"rows {idx[0]}-{idx[-1]}{' scores' if s else ''}"
                                         for (_, idx), s in zip(found, score)),
             ", ".join(f"{v:.3g}" for v in start))
    if focus and score.any():
        log.info("detect distillation: confident-anchor score term at weight %g, start %.3g", focus, focus_scale)
    return DetectSpec(axis, rows, score, scale, float(score_weight), float(focus), float(focus_scale))


def detect_spec(student: onnx.ModelProto, teacher: onnx.ModelProto, output: str | None, data: Dataset,
                batchable: bool, threads: int, score_weight: float = 1.0, focus: float = 0.0) -> DetectSpec:
    """spec_from_outputs on DETECT_SAMPLES samples spread over `data`."""
    outs = [spread_outputs(m, output, data, DETECT_SAMPLES, batchable, threads) for m in (student, teacher)]
    return spec_from_outputs(*outs, score_weight, focus)


__all__ = ["DETECT_SAMPLES", "detect_spec", "packed_scores", "spec_from_outputs"]
