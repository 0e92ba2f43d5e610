"""The task harness (tools/tasks.py): offline data for each named real model, and metrics that mean something.

For each task: the calibration set has the layout onnxprune reads and shares no sample with the evaluation
set; the DENSE model scores well on the evaluation set (so the metric measures the task, not noise); a
deliberately wrong prediction scores badly (so the metric can fail). One pruned model is checked against
the dense score. Run with `pytest -m real`; about 1 minute on 2 cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import tasks  # noqa: E402
import tasks_magika  # noqa: E402
import tasks_ocr  # noqa: E402

pytestmark = pytest.mark.real

# (task, evaluation samples, dense must reach at least / at most this score in points)
DENSE = {
    "ppocr_rec": (24, "max", 5.0),        # CER %
    "ppocr_cls": (24, "min", 90.0),       # 0/180 accuracy %
    "ppocr_det": (4, "min", 100.0),       # F1 vs dense, trivially 100: the box count is checked below
    "nudenet_320n": (16, "min", 100.0),   # same; at least 10 faces are checked below
    "ddddocr_det": (16, "min", 100.0),    # same; the glyphs drawn are checked below
    "ddddocr_common": (24, "min", 80.0),  # exact match % against the drawn strings
    "magika": (4, "min", 80.0),           # file-type accuracy % (4 files per type, about half kept)
}


def _input_ranks(model: onnx.ModelProto) -> dict[str, int]:
    inits = {i.name for i in model.graph.initializer}
    return {i.name: len(i.type.tensor_type.shape.dim) for i in model.graph.input if i.name not in inits}


@pytest.fixture(scope="module", params=sorted(DENSE))
def scored(request):
    task = tasks.get(request.param)
    n = DENSE[request.param][0]
    ev = task.evaluation(n)
    preds = task.predict(tasks.session(task.model()), ev)
    return task, ev, preds


def test_calibration_matches_model_inputs_and_is_disjoint(scored):
    task, ev, _ = scored
    calib = task.calibration(8)
    ranks = _input_ranks(task.model())
    assert set(calib) == set(ranks)
    for name, arr in calib.items():
        assert arr.shape[0] == 8 and arr.ndim in (ranks[name], ranks[name] + 1)
        assert np.isfinite(arr.astype(np.float64)).all()
        samples = arr if arr.ndim == ranks[name] + 1 else arr[:, None]
        seen = {s.tobytes() for feed in ev.feeds for s in feed[name][:, None]}
        assert not any(s.tobytes() in seen for s in samples), f"{task.name}: a calibration sample is evaluated"


def test_dense_model_scores_well(scored):
    task, ev, preds = scored
    _, kind, bound = DENSE[task.name]
    got = task.score(preds, ev, preds)["score"]
    assert (got <= bound) if kind == "max" else (got >= bound), f"{task.name}: dense {got:.2f}"


def test_wrong_predictions_score_badly(scored):
    """Predictions permuted (each input gets another input's answer) must lose most points."""
    task, ev, preds = scored
    order = np.random.default_rng(0).permutation(len(preds))
    shifted = [preds[i] for i in order]
    dense = task.score(preds, ev, preds)["score"]
    wrong = task.score(shifted, ev, preds)["score"]
    if task.higher_is_better:
        assert wrong < dense - 30, (task.name, dense, wrong)
    else:
        assert wrong > dense + 30, (task.name, dense, wrong)


def test_detectors_find_what_was_drawn():
    det = tasks.get("ppocr_det")
    ev = det.evaluation(4)
    boxes = det.predict(tasks.session(det.model()), ev)
    drawn = sum(map(len, ev.labels))
    assert abs(sum(map(len, boxes)) - drawn) <= max(1, drawn // 10)
    nude = tasks.get("nudenet_320n")
    ev = nude.evaluation()
    faces = nude.predict(tasks.session(nude.model()), ev)
    assert sum(map(len, faces)) >= 10
    assert sum(1 for f in faces[:4] if f) == 4  # the whole astronaut and cameraman photos, both ways round
    glyphs = tasks.get("ddddocr_det")
    ev = glyphs.evaluation(16)
    boxes = glyphs.predict(tasks.session(glyphs.model()), ev)
    assert tasks.match_f1([[(0, b) for b in d] for d in ev.labels], boxes) >= 0.8  # 0.92 on the 64 of the bench


def test_calibration_and_evaluation_are_disjoint():
    rec = tasks.get("ppocr_rec")
    calib_texts = set(tasks_ocr.text_lines(32, 2, rec.H, rec.W, None, frozenset(rec.evaluation().labels))[0])
    assert not calib_texts & set(rec.evaluation().labels)
    mag = tasks.get("magika")
    ev_paths = set(mag.evaluation().extra["paths"])
    calib_paths = {p for p, _ in tasks_magika.magika_files(5, seed=1) if not mag._is_eval(p)}
    assert ev_paths and calib_paths and not ev_paths & calib_paths


def test_db_boxes_and_f1():
    prob = np.zeros((40, 60), np.float32)
    prob[5:12, 4:30] = 0.9   # a line
    prob[20:27, 10:50] = 0.8  # another
    prob[33:35, 2:4] = 0.9    # a speck, below min_side
    boxes = tasks_ocr.db_boxes(prob)
    assert len(boxes) == 2
    ref = [[(0, b) for b in boxes]]
    assert tasks.match_f1(ref, ref) == 1.0
    assert tasks.match_f1(ref, [[(0, boxes[0])]]) == pytest.approx(2 / 3)
    assert tasks.match_f1(ref, [[(1, b) for b in boxes]]) == 0.0  # another class never matches


def test_pruned_cls_stays_near_dense(tmp_path):
    """reconstruction/global/lstsq at 0.9 of the MACs on the PP-OCR direction classifier. Measured with
    tools/bench_tasks.py at 81.0 (dense 99.0) on 100 lines at commit 74abde5; the bound leaves margin and
    should be tightened as recovery improves."""
    import onnxprune

    task = tasks.get("ppocr_cls")
    ev = task.evaluation(40)
    dense_preds = task.predict(tasks.session(task.model()), ev)
    dense = task.score(dense_preds, ev, dense_preds)["score"]
    np.savez(tmp_path / "calib.npz", **task.calibration(32))
    r = onnxprune.prune(task.model(), target_macs=0.9, calib=str(tmp_path / "calib.npz"),
                        input_shapes=task.input_shapes(), criterion="reconstruction", scope="global",
                        recover="lstsq", bench_rounds=0)
    got = task.score(task.predict(tasks.session(r.model), ev), ev, dense_preds)["score"]
    assert got >= dense - 30, f"pruned {got:.1f} vs dense {dense:.1f}"
