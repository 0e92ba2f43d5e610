"""Label-free epoch selection on a packed detector head (recover/epoch_measures.py, TrainSettings.select
"parts" and "confident"): per-part held-out cosines and the confident anchors' F1, recorded every epoch."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.load.data import Dataset
from onnxprune.recover.epoch_measures import CONFIDENT, PartMeasures
from onnxprune.recover.finetune import finetune
from onnxprune.recover.trainloop import score
from test_detect_distill import STUDENT, TEACHER, X


def packed(n: int = 4, anchors: int = 2000, seed: int = 0) -> np.ndarray:
    """(n, 2 box rows in pixels + 3 score rows, anchors): scores ~1e-3 but at anchor 2 (row 3 at 0.9), so
    the score rows spread ~1e-4 of the boxes (different parts)."""
    rng = np.random.default_rng(seed)
    t = np.concatenate([rng.uniform(0, 320, (n, 2, anchors)), rng.uniform(0, 2e-3, (n, 3, anchors))], 1)
    t[:, 3, 2] = 0.9
    return t.astype(np.float32)


def test_a_score_change_at_confident_anchors_shows_in_the_score_part_not_the_boxes():
    t = packed()
    o = t.copy()
    o[:2, 3, 2] = 0.1   # two of the four confident anchors lost
    o[0, 4, 7] = 0.8    # and one false one
    m = PartMeasures()
    m.add(o[:2], t[:2])  # in two batches: running sums
    m.add(o[2:], t[2:])
    r = m.result()
    assert len(r["val_parts"]) == 2
    assert r["val_parts"][0] == pytest.approx(1.0)          # the box rows are untouched
    assert r["val_parts"][1] < 0.9 and r["val_worst_part"] == r["val_parts"][1]
    # teacher: 4 confident anchors; student: 2 of them (same row) + 1 false -> F1 = 2 * 2 / (4 + 3)
    assert r["val_confident"] == pytest.approx(4 / 7)
    assert CONFIDENT <= 0.8


def test_a_wrong_top_row_at_a_confident_anchor_does_not_count_as_agreeing():
    t = packed(n=1)
    o = t.copy()
    o[0, 3, 2], o[0, 4, 2] = 0.0, 0.9  # confident, but another class
    m = PartMeasures()
    m.add(o, t)
    assert m.result()["val_confident"] == pytest.approx(0.0)


def test_an_output_of_one_scale_records_nothing():
    rng = np.random.default_rng(1)
    t = rng.standard_normal((4, 6, 5)).astype(np.float32)  # a recognizer's positions x classes: one part
    m = PartMeasures()
    m.add(t + 0.1, t)
    assert m.result() == {} and m.sums is None
    assert not PartMeasures.applies(t[:, :, 0], t[:, :, 0])  # rank 2: a classifier


def test_the_selection_ranks_by_its_entry_first_and_falls_back_to_fidelity():
    better_parts = {"val_loss": 5.0, "val_worst_part": 0.9, "val_confident": 0.2}
    lower_loss = {"val_loss": 1.0, "val_worst_part": 0.8, "val_confident": 0.6}
    assert score(better_parts, False, False, "val_worst_part") > score(lower_loss, False, False, "val_worst_part")
    assert score(lower_loss, False, False, "val_confident") > score(better_parts, False, False, "val_confident")
    assert score(lower_loss, False) > score(better_parts, False)  # fidelity
    assert score({"val_loss": 2.0}, False, False, "val_worst_part") == -2.0  # one part: the loss


@pytest.mark.parametrize("select, key", [("parts", "val_worst_part"), ("confident", "val_confident")])
def test_the_kept_epoch_is_the_best_by_the_rule(select, key):
    result = finetune(STUDENT, Dataset({"x": X[:, None]}), 3, teacher=TEACHER, lr=3e-2, batch_size=32,
                      progress=False, threads=1, distill="detect", select=select)
    values = [h[key] for h in result.history]
    assert all(len(h["val_parts"]) == 2 for h in result.history)
    assert values[result.best_epoch] == max(values)
    assert result.best_epoch == values.index(max(values))  # the earliest of equals


def test_an_unknown_selection_names_the_choices():
    from onnxprune.errors import BadInputError
    with pytest.raises(BadInputError, match="parts"):
        finetune(STUDENT, Dataset({"x": X[:8, None]}), 1, teacher=TEACHER, select="cosine", progress=False)
