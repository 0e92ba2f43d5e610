"""Held-out measures of a packed detector head, for choosing the epoch kept without labels.

A YOLO-style output ([N, rows, anchors]) packs box rows (pixels) and score rows (probabilities ~1e-4 on
most anchors). The held-out distillation loss averages over all of them and went on falling while
NudeNet's face F1 fell back (issue 10, seventh pass); the score rows' own cosine followed face F1 across
pruned candidates (the lead's wave 9, check/fidelity.py's parts). So per epoch, over the held-out data:

- `parts`: the cosine of each part (rows of one scale, split at output_parts.PART_GAP on the teacher's
  per-row spread, as fisher and the fidelity report split them); `worst_part`: the lowest of them;
- `confident`: at the anchors where either model's top score (over the rows of the parts whose teacher
  values lie in [0, 1] on the first held-out batch) reaches CONFIDENT, an F1 of the two agreeing (both above it, same top row): detections
  before NMS, read off the outputs without labels.

Running sums only, so memory does not grow with the held-out set.
"""

from __future__ import annotations

import numpy as np

from onnxprune.score.output_parts import parts as scale_parts

CONFIDENT = 0.5  # a score at or above this counts as a detection for `confident`
SELECT_KEYS = {"parts": "val_worst_part", "confident": "val_confident"}  # TrainSettings.select -> history entry
EPOCH_SELECTIONS = ("fidelity", "agreement", *SELECT_KEYS)  # fidelity, agreement: recover/trainloop.py's score


class PartMeasures:
    """Accumulates per-row sums of batch-first outputs of rank >= 3 (rows: axis 1) against their targets."""

    def __init__(self) -> None:
        self.sums: np.ndarray | None = None   # rows x (dot, target_sq, out_sq, target_sum)
        self.count = 0                         # entries per row seen
        self.score_rows: np.ndarray | None = None  # rows of the score parts, found on the first batch
        self.hits = np.zeros(3, np.int64)      # confident anchors: both agreeing, the teacher's, the student's
        self.off = False                       # the first batch's rows are of one scale: nothing to measure

    @staticmethod
    def applies(out: np.ndarray, target: np.ndarray) -> bool:
        return (np.ndim(out) >= 3 and np.shape(out) == np.shape(target) and np.shape(out)[1] > 1
                and np.issubdtype(np.asarray(out).dtype, np.floating))

    def add(self, out: np.ndarray, target: np.ndarray) -> None:
        o = np.asarray(out, np.float32).reshape(out.shape[0], out.shape[1], -1)
        t = np.asarray(target, np.float32).reshape(o.shape)
        if self.sums is None and not self.off:  # the first batch: one scale (a recognizer's positions) or parts
            self.off = len(_parts(t)) < 2
            self.score_rows = None if self.off else _score_rows(t)
        if self.off:
            return
        sums = [np.einsum("nrk,nrk->r", a, b, dtype=np.float64) for a, b in ((t, o), (t, t), (o, o))]
        batch = np.stack([*sums, t.sum((0, 2), dtype=np.float64)], 1)
        self.sums = batch if self.sums is None else self.sums + batch
        self.count += o.shape[0] * o.shape[2]
        if self.score_rows is not None:
            so, st = o[:, self.score_rows], t[:, self.score_rows]
            hit_o, hit_t = so.max(1) >= CONFIDENT, st.max(1) >= CONFIDENT
            same = so.argmax(1) == st.argmax(1)
            self.hits += [int((hit_o & hit_t & same).sum()), int(hit_t.sum()), int(hit_o.sum())]

    def result(self) -> dict:
        """{"val_parts": [cosine per part, in row order], "val_worst_part", "val_confident"} or {} when the
        rows are of one scale."""
        if self.sums is None:
            return {}
        dot, tsq, osq, tsum = self.sums.T
        std = np.sqrt(np.maximum(tsq / self.count - (tsum / self.count) ** 2, 0.0))
        found = scale_parts({"out": std}, floor=1e-12) if std.max() > 0 else []
        if len(found) < 2:
            return {}
        found = sorted((rows for _, rows in found), key=lambda rows: int(rows[0]))
        cosines = [_cosine(dot[r].sum(), tsq[r].sum(), osq[r].sum()) for r in found]
        result = {"val_parts": cosines, "val_worst_part": min(cosines)}
        if self.score_rows is not None:
            both, teacher, student = (int(v) for v in self.hits)
            result["val_confident"] = 1.0 if teacher + student == 0 else 2.0 * both / (teacher + student)
        return result


def _parts(t: np.ndarray) -> list:
    std = t.std(axis=(0, 2), dtype=np.float64)
    return scale_parts({"out": std}, floor=1e-12) if std.max() > 0 else []


def _score_rows(t: np.ndarray) -> np.ndarray | None:
    """Rows of the parts whose values all lie in [0, 1]."""
    rows = [r for _, r in _parts(t) if t[:, r].min() >= 0.0 and t[:, r].max() <= 1.0]
    return np.sort(np.concatenate(rows)) if rows else None


def _cosine(dot: float, tsq: float, osq: float) -> float:
    denom = np.sqrt(tsq) * np.sqrt(osq)
    return float(dot / denom) if denom > 0 else float(tsq == osq)


__all__ = ["CONFIDENT", "EPOCH_SELECTIONS", "PartMeasures", "SELECT_KEYS"]
