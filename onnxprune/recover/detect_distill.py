"""The DetectSpec of the detect distillation loss (autodiff/detect_loss.py), read off the models' outputs.

On up to DETECT_SAMPLES training samples: the row axis is the one whose per-index variances spread widest
(distill_weights.channel_axis); the rows split into parts where their standard deviations jump by more
than PART_GAP (score/output_parts.py, as fisher's probes and the fidelity report split them); a part
whose teacher values all lie in [0, 1] holds scores. Each part's scale is the student's term on these
samples at the start of training, so every part starts at 1; a part the pruning barely touched is not
blown up past 1e6 times its trivial error (predicting each row's mean).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

from onnxprune.autodiff.detect_loss import DetectSpec, part_terms
from onnxprune.errors import BadInputError
from onnxprune.load.data import Dataset
from onnxprune.recover.distill_weights import channel_axis
from onnxprune.recover.targets import first_outputs
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


def spec_from_outputs(student_out: np.ndarray, teacher_out: np.ndarray) -> DetectSpec:
    """Parts, score parts and scales of a batch-first output (module docstring)."""
    t = np.asarray(teacher_out, dtype=np.float64)
    if t.ndim < 2:
        raise BadInputError("the detect distillation loss needs an output with a row axis (rank >= 2)")
    axis, found, score = _parts_and_scores(t)
    rows = np.zeros(t.shape[axis], dtype=np.int64)
    for p, (_, idx) in enumerate(found):
        rows[idx] = p
    plain = DetectSpec(axis, rows, score, np.ones(len(found)))
    start = part_terms(student_out, t, plain)
    trivial = part_terms(np.broadcast_to(t.mean(axis=tuple(i for i in range(t.ndim) if i != axis), keepdims=True),
                                         t.shape), t, plain)
    scale = np.maximum(start, np.maximum(SCALE_FLOOR * trivial, 1e-30))
    log.info("detect distillation: %d output parts on axis %d (%s), start terms %s",
             len(found), axis, ", ".join(f"rows {idx[0]}-{idx[-1]}{' scores' if s else ''}"
                                         for (_, idx), s in zip(found, score)),
             ", ".join(f"{v:.3g}" for v in start))
    return DetectSpec(axis, rows, score, scale)


def detect_spec(student: onnx.ModelProto, teacher: onnx.ModelProto, output: str | None, data: Dataset,
                batchable: bool, threads: int) -> DetectSpec:
    """spec_from_outputs on the first DETECT_SAMPLES samples of `data`."""
    return spec_from_outputs(*(first_outputs(m, output, data, DETECT_SAMPLES, batchable, threads)
                               for m in (student, teacher)))


__all__ = ["DETECT_SAMPLES", "detect_spec", "spec_from_outputs"]
