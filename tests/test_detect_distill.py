"""The detect distillation loss (autodiff/detect_loss.py, recover/detect_distill.py): a YOLO-style toy head
(N, 2 box rows in pixels + 3 sigmoid score rows, 6 anchors, most scores low). Its parts and score rows are found, its loss
matches float64 numpy, its gradient matches float64 finite differences, and training with it improves
the scores at the teacher's confident anchors where plain squared error neglects them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxprune.autodiff.builder import build_training_graph
from onnxprune.autodiff.detect_loss import binary_kl, part_terms
from onnxprune.autodiff.gradcheck import check_gradients
from onnxprune.autodiff.losses import numpy_loss
from onnxprune.autodiff.weights import read_weights
from onnxprune.errors import BadInputError
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.detect_distill import spec_from_outputs
from onnxprune.recover.finetune import finetune

A, HIDDEN = 6, 8
RNG = np.random.default_rng(0)
W1, W2 = RNG.standard_normal((4, HIDDEN)), RNG.standard_normal((HIDDEN, 5))
X = RNG.standard_normal((256, 4, A)).astype(np.float32)


def head(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """x (N, 4, A) -> per anchor relu(x W1) W2 -> rows (N, 5, A): 2 box rows x 300, 3 rows through a Sigmoid
    with a prior of -4 (most anchors hold no object, as in a detector)."""
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["xt", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["z"]), helper.make_node("Transpose", ["z"], ["zt"], perm=[0, 2, 1]),
             helper.make_node("Split", ["zt", "split"], ["box", "cls"], axis=1),
             helper.make_node("Mul", ["box", "pixels"], ["boxes"]), helper.make_node("Add", ["cls", "prior"], ["shifted"]),
             helper.make_node("Sigmoid", ["shifted"], ["scores"]),
             helper.make_node("Concat", ["boxes", "scores"], ["y"], axis=1)]
    inits = [numpy_helper.from_array(w1.astype(np.float32), "w1"), numpy_helper.from_array(w2.astype(np.float32), "w2"),
             numpy_helper.from_array(np.asarray([2, 3], dtype=np.int64), "split"),
             numpy_helper.from_array(np.asarray(300.0, dtype=np.float32), "pixels"),
             numpy_helper.from_array(np.asarray(-4.0, dtype=np.float32), "prior")]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4, A])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5, A])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def outputs(model: onnx.ModelProto, x: np.ndarray = X) -> np.ndarray:
    return session(model).run(["y"], {"x": x})[0]


TEACHER = head(W1, W2)
STUDENT = head(W1 + 0.3 * RNG.standard_normal(W1.shape), W2)


def test_the_parts_are_the_box_rows_and_the_score_rows_and_each_starts_at_one():
    spec = spec_from_outputs(outputs(STUDENT), outputs(TEACHER))
    assert spec.axis == 1
    assert spec.rows.tolist() == [1, 1, 0, 0, 0] or spec.rows.tolist() == [0, 0, 1, 1, 1]
    assert spec.score[spec.rows].tolist() == [False, False, True, True, True]
    terms = part_terms(outputs(STUDENT), outputs(TEACHER), spec) / spec.scale
    assert terms == pytest.approx(np.ones(2), rel=1e-6)  # each part weighs 1 at the start
    assert numpy_loss("distill", outputs(STUDENT), outputs(TEACHER), distill="detect", balance=spec) == \
        pytest.approx(2.0, rel=1e-6)


def test_binary_kl_is_zero_at_the_target_and_positive_elsewhere():
    t = np.asarray([0.0, 0.2, 0.9, 1.0])
    assert np.abs(binary_kl(t, t)).max() < 1e-12
    assert (binary_kl(np.asarray([0.5, 0.5, 0.5, 0.5]), t) > 0).all()


@pytest.mark.parametrize("weighted", [True, False])
def test_loss_matches_numpy_and_the_gradient_matches_float64_finite_differences(weighted):
    teacher_out = outputs(TEACHER)[:16]
    spec = spec_from_outputs(outputs(STUDENT)[:64], outputs(TEACHER)[:64])
    if not weighted:  # no score rows: every anchor weighs 1, squared error balanced per part
        spec.score[:] = False
    assert_loss_and_gradient(spec, teacher_out)


def assert_loss_and_gradient(spec, teacher_out) -> None:
    """The detect loss in the training graph equals numpy's, and its gradient matches float64 finite
    differences, on the student's first 16 samples (test_detect_focus.py uses it too)."""
    tg = build_training_graph(STUDENT, None, "distill", distill="detect", balance=spec)
    weights = read_weights(STUDENT, tg.trainable)
    got = session(tg.model).run([tg.loss, tg.logits], {"x": X[:16], tg.target: teacher_out, **weights})
    expected = numpy_loss("distill", got[1], teacher_out, distill="detect", balance=spec)
    assert float(got[0]) == pytest.approx(expected, rel=1e-4)
    check = check_gradients(STUDENT, {"x": X[:16]}, loss="distill", target=teacher_out, distill="detect", balance=spec)
    assert check.errors and check.worst < 1e-3, check.errors


def test_detect_needs_its_spec():
    with pytest.raises(BadInputError, match="detect"):
        build_training_graph(STUDENT, None, "distill", distill="detect")


def _score_error_where_confident(model: onnx.ModelProto) -> float:
    """Mean absolute score error at the anchors where the teacher's best score passes 0.5, on fresh inputs."""
    x = np.random.default_rng(9).standard_normal((512, 4, A)).astype(np.float32)
    got, want = outputs(model, x), outputs(TEACHER, x)
    confident = want[:, 2:].max(axis=1) > 0.5
    return float(np.abs(got[:, 2:] - want[:, 2:]).max(axis=1)[confident].mean())


def test_training_with_it_improves_the_confident_scores_more_than_plain_squared_error():
    student = head(W1[:, :4], W2[:4])  # half the hidden units, shared by all rows: it cannot match every row
    data = Dataset({"x": X[:, None]})
    before = _score_error_where_confident(student)
    runs = {mode: finetune(student, data, 12, teacher=TEACHER, distill=mode, lr=1e-2, batch_size=32, progress=False,
                           trainable=("w1",), threads=1, holdout=0.0, keep="last") for mode in ("mse", "detect")}
    after = {mode: _score_error_where_confident(r.model) for mode, r in runs.items()}
    assert runs["detect"].distill == "detect"
    assert after["detect"] < 0.85 * before  # the shared hidden layer serves the scores too ...
    assert after["detect"] < 0.85 * after["mse"], after  # ... where squared error spends it on the pixels


def test_the_cli_trains_with_distill_detect(tmp_path, capsys):
    from onnxprune.cli.main import main
    student, teacher, data, out = (tmp_path / n for n in ("student.onnx", "teacher.onnx", "data.npz", "out.onnx"))
    onnx.save(head(W1[:, :4], W2[:4]), str(student))
    onnx.save(TEACHER, str(teacher))
    np.savez(data, x=X[:128])
    flags = ["--epochs", "2", "--lr", "1e-2", "--batch-size", "32", "--threads", "1"]
    assert main(["finetune", str(student), "--teacher", str(teacher), "--data", str(data), "-o", str(out), *flags,
                 "--distill", "detect"]) == 0
    trained = onnx.load(str(out))
    assert outputs(trained).shape == outputs(TEACHER).shape
    assert "(distill detect)" in capsys.readouterr().out


def test_the_default_distills_a_packed_detector_head_by_the_detect_loss():
    """distill="auto" (the default) reads boxes beside sigmoid scores as a detector's rows: KL over the last
    axis would be a softmax over anchors (NudeNet 320n kept 54.55 face F1 with it, 72.73 with detect)."""
    from onnxprune.recover.detect_distill import packed_scores
    assert packed_scores(outputs(TEACHER))
    scores_only = 1 / (1 + np.exp(-RNG.standard_normal((16, 7600, 10)) * np.linspace(0.1, 30, 7600)[None, :, None]))
    assert not packed_scores(scores_only)  # anchors x classes, all scores (a PicoDet-style score output)
    assert not packed_scores(RNG.standard_normal((16, 10)) * 50)  # class logits
    student = head(W1[:, :4], W2[:4])
    data = Dataset({"x": X[:64, None]})
    result = finetune(student, data, 1, teacher=TEACHER, lr=1e-3, batch_size=32, progress=False, threads=1,
                      holdout=0.0)
    assert result.distill == "detect"


def test_teacher_outputs_for_the_loss_choice_are_read_spread_over_the_data():
    """Data sorted by kind (an image folder read class by class) showed one kind in its first samples; the
    detect spec, the balanced weights and auto's decision now read samples spread over the data."""
    from onnx import TensorProto, helper
    from onnxprune.load.data import Dataset
    from onnxprune.recover.targets import spread_outputs
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1]) for n in ("x", "y"))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    ident = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = Dataset({"x": np.arange(100, dtype=np.float32).reshape(100, 1, 1)})
    for batchable in (True, False):
        out = spread_outputs(ident, None, data, 4, batchable, step=2)
        assert out.ravel().tolist() == [0.0, 33.0, 66.0, 99.0]
