"""The loss `auto` picks by what the output is (recover/distill_mode.py), and the binary KL on a Sigmoid's
logits against numpy and finite differences. Before wave 18 a single score (N, 1) went to the softmax KL,
a softmax over one value: the loss was identically zero and such a model never trained."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff.builder import build_training_graph
from onnxprune.autodiff.losses import numpy_loss
from onnxprune.autodiff.weights import read_weights
from onnxprune.errors import BadInputError
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.finetune import finetune

X = np.random.default_rng(2).standard_normal((256, 1, 8)).astype(np.float32)


def scorer(seed: int, squash: str | None = "Sigmoid", width: int = 1) -> onnx.ModelProto:
    """x (N, 8) -> MatMul 16 -> Relu -> MatMul `width` [-> squash] -> 'p'."""
    rng = np.random.default_rng(seed)
    w = {"w1": rng.standard_normal((8, 16)).astype(np.float32), "w2": rng.standard_normal((16, width)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["z" if squash else "p"])]
    if squash:
        nodes.append(helper.make_node(squash, ["z"], ["p"]))
    graph = helper.make_graph(nodes, "scorer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", width])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _error(model: onnx.ModelProto, teacher: onnx.ModelProto) -> float:
    x = X[:, 0]
    return float(np.mean((session(model).run(["p"], {"x": x})[0] - session(teacher).run(["p"], {"x": x})[0]) ** 2))


@pytest.mark.parametrize("squash, width, expected", [("Sigmoid", 1, "binary"), ("Sigmoid", 5, "binary"),
                                                     (None, 1, "mse"), (None, 5, "kl"), ("Softmax", 5, "kl")])
def test_auto_picks_the_loss_by_what_the_output_is_and_the_student_trains(squash, width, expected):
    teacher, student = scorer(0, squash, width), scorer(1, squash, width)
    result = finetune(student, Dataset({"x": X}), 3, teacher=teacher, progress=False, threads=1, lr=1e-2)
    assert result.distill == expected
    assert result.best_epoch > 0 and result.history[1]["loss"] > 0
    assert _error(result.model, teacher) < _error(student, teacher)


def test_the_binary_loss_matches_numpy_and_its_gradient_finite_differences():
    teacher, student = scorer(0, "Sigmoid", 3), scorer(1, "Sigmoid", 3)
    tg = build_training_graph(_expose(student, "z"), None, "distill", output="z", temperature=2.0, distill="binary",
                              input_shapes={"x": (1, 8)})
    x = X[:16, 0]
    t_z = session(_expose(teacher, "z")).run(["z"], {"x": x})[0]
    s_z = session(_expose(student, "z")).run(["z"], {"x": x})[0]
    weights = read_weights(student, tg.trainable)

    def run(ws):
        out = session(tg.model).run([tg.loss] + [tg.grads[w] for w in tg.trainable], {"x": x, tg.target: t_z, **ws})
        return float(out[0]), dict(zip(tg.trainable, out[1:]))
    loss, grads = run(weights)
    assert loss == pytest.approx(numpy_loss("distill", s_z, t_z, temperature=2.0, distill="binary"), rel=1e-4)
    assert numpy_loss("distill", t_z, t_z, temperature=2.0, distill="binary") == pytest.approx(0.0, abs=1e-9)
    rng, eps = np.random.default_rng(3), 1e-3
    direction = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in weights.items()}
    plus, _ = run({k: v + eps * direction[k] for k, v in weights.items()})
    minus, _ = run({k: v - eps * direction[k] for k, v in weights.items()})
    analytic = sum(float(np.sum(grads[k].astype(np.float64) * direction[k])) for k in weights)
    assert (plus - minus) / (2 * eps) == pytest.approx(analytic, rel=2e-2)


def test_binary_asked_for_an_output_without_a_sigmoid_is_bad_input():
    with pytest.raises(BadInputError, match="Sigmoid"):
        finetune(scorer(1, None, 5), Dataset({"x": X}), 1, teacher=scorer(0, None, 5), progress=False, distill="binary")


def test_agreement_on_a_sigmoid_output_counts_yes_no_decisions():
    """The held-out agreement (and the guard's) reads each score's decision (logit > 0), not an argmax over a
    row of independent scores."""
    from onnxprune.recover.trainloop import evaluate_epoch

    class Graph:
        loss_kind, others = "distill", []

    t = np.array([[2.0, -1.0, 3.0], [-2.0, -0.5, 1.0]], np.float32)
    z = np.array([[1.0, 0.5, 3.0], [-1.0, -0.1, 2.0]], np.float32)  # one decision of six flipped, both argmaxes kept
    data = Dataset({"x": np.zeros((2, 1, 1), np.float32)})
    result = evaluate_epoch(lambda feeds: z, data, t, Graph(), 2, True, {"distill": "binary", "temperature": 2.0})
    assert result["val_agreement"] == pytest.approx(5 / 6)


def segmenter(seed: int) -> onnx.ModelProto:
    """x (N, 3, 6, 6) -> Conv 5 classes -> Softmax over axis 1 (the classes of each pixel) -> 'p'."""
    rng = np.random.default_rng(seed)
    w = {"w": rng.standard_normal((5, 3, 3, 3)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z"], pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["z"], ["p"], axis=1)]
    graph = helper.make_graph(nodes, "seg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 5, 6, 6])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_softmax_over_the_channel_axis_is_distilled_per_pixel_over_its_classes():
    """Before, a Softmax over axis 1 was not recognised: KL ran over the image width of the probabilities."""
    teacher, student = segmenter(0), segmenter(1)
    x = np.random.default_rng(4).standard_normal((64, 1, 3, 6, 6)).astype(np.float32)
    result = finetune(student, Dataset({"x": x[:48]}), 5, teacher=teacher, progress=False, threads=1, lr=3e-2,
                      batch_size=8, val_data=Dataset({"x": x[48:]}))
    assert result.distill == "kl"
    z_t = np.moveaxis(session(_expose(teacher, "z")).run(["z"], {"x": x[48:, 0]})[0], 1, -1)
    z_s = np.moveaxis(session(_expose(student, "z")).run(["z"], {"x": x[48:, 0]})[0], 1, -1)
    assert result.history[0]["val_loss"] == pytest.approx(numpy_loss("distill", z_s, z_t, temperature=2.0), rel=1e-4)
    agree = lambda m: float(np.mean(session(m).run(["p"], {"x": x[:, 0]})[0].argmax(1)  # noqa: E731
                                    == session(teacher).run(["p"], {"x": x[:, 0]})[0].argmax(1)))
    assert agree(result.model) > agree(student) + 0.1


def _expose(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return out
