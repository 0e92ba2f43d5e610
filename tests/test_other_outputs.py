"""Distillation of a model with several outputs: the class scores by their loss, every other float output by
squared error relative to the teacher's (recover/outputs.py). Before wave 18 only the first output trained:
a head feeding another output never did, and nothing measured it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff.builder import build_training_graph
from onnxprune.autodiff.feature_loss import numpy_feature_loss
from onnxprune.autodiff.losses import numpy_loss
from onnxprune.autodiff.weights import read_weights
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.finetune import finetune
from onnxprune.recover.outputs import distilled_outputs

X = np.random.default_rng(0).standard_normal((96, 1, 3, 12, 12)).astype(np.float32)


def two_heads(seed: int = 0, head_noise: float = 0.0) -> onnx.ModelProto:
    """x -> Conv 8 -> Relu -> GlobalAveragePool -> Flatten -> [Gemm 4: 'boxes' (first), Gemm 5 -> Softmax: 'probs'],
    as MTCNN lays out its heads; head_noise perturbs the class head only."""
    rng = np.random.default_rng(seed)
    w = {"conv_w": rng.standard_normal((8, 3, 3, 3)) * 0.3, "conv_b": rng.standard_normal(8) * 0.1,
         "box_w": rng.standard_normal((4, 8)), "box_b": rng.standard_normal(4) * 0.1,
         "cls_w": rng.standard_normal((5, 8)) * 2, "cls_b": rng.standard_normal(5) * 0.1}
    w["cls_w"] = w["cls_w"] + head_noise * np.random.default_rng(99).standard_normal(w["cls_w"].shape)
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "box_w", "box_b"], ["boxes"], transB=1),
             helper.make_node("Gemm", ["f", "cls_w", "cls_b"], ["z"], transB=1),
             helper.make_node("Softmax", ["z"], ["probs"], axis=-1)]
    graph = helper.make_graph(
        nodes, "two_heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_class_scores_are_primary_and_the_box_output_is_matched_beside_them():
    teacher = two_heads()
    assert distilled_outputs(teacher, teacher, None, Dataset({"x": X[:4]}), True) == ("probs", ["boxes"])
    assert distilled_outputs(teacher, teacher, "boxes", Dataset({"x": X[:4]}), True) == ("boxes", [])


def _run(tg, feeds: dict, weights: dict) -> tuple[float, dict]:
    out = session(tg.model).run([tg.loss] + [tg.grads[w] for w in tg.trainable], {**feeds, **weights})
    return float(out[0]), dict(zip(tg.trainable, out[1:]))


def test_the_loss_with_another_output_matches_numpy_and_finite_differences():
    teacher, student = two_heads(), two_heads(head_noise=0.5)
    student.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))  # as logits_views does
    teacher.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    tg = build_training_graph(student, None, "distill", output="z", temperature=2.0, others=(["boxes"], 1.0),
                              input_shapes={"x": (1, 3, 12, 12)})
    assert "box_w" in tg.trainable and tg.others == ["boxes"]
    x = X[:6, 0]
    t_z, t_boxes = session(teacher).run(["z", "boxes"], {"x": x})
    s_z, s_boxes = session(student).run(["z", "boxes"], {"x": x})
    feeds = {"x": x, tg.target: t_z, tg.feature_targets["boxes"]: t_boxes}
    weights = read_weights(student, tg.trainable)
    loss, grads = _run(tg, feeds, weights)
    expected = numpy_loss("distill", s_z, t_z, temperature=2.0) + numpy_feature_loss([s_boxes], [t_boxes], 1.0)
    assert loss == pytest.approx(expected, rel=1e-4)
    rng, eps = np.random.default_rng(1), 1e-3
    direction = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in weights.items()}
    plus, _ = _run(tg, feeds, {k: v + eps * direction[k] for k, v in weights.items()})
    minus, _ = _run(tg, feeds, {k: v - eps * direction[k] for k, v in weights.items()})
    analytic = sum(float(np.sum(grads[k].astype(np.float64) * direction[k])) for k in weights)
    assert (plus - minus) / (2 * eps) == pytest.approx(analytic, rel=2e-2)


def _errors(model: onnx.ModelProto, teacher: onnx.ModelProto) -> dict[str, float]:
    x = X[:, 0]
    s, t = session(model).run(["boxes", "probs"], {"x": x}), session(teacher).run(["boxes", "probs"], {"x": x})
    return {k: float(np.sum((a - b) ** 2) / np.sum(b ** 2)) for k, a, b in zip(("boxes", "probs"), s, t)}


def test_distillation_trains_the_class_head_that_the_first_output_does_not_read():
    """The student's class head is off; its first output (boxes) is the teacher's. Distilling the first output
    alone never reached the class head; every output distilled, the class scores come back."""
    teacher, student = two_heads(), two_heads(head_noise=0.5)
    before = _errors(student, teacher)
    result = finetune(student, Dataset({"x": X}), 4, teacher=teacher, progress=False, threads=1, batch_size=16,
                      lr=3e-2, holdout=0.25)
    after = _errors(result.model, teacher)
    assert result.others == ["boxes"]
    assert after["probs"] < 0.5 * before["probs"], (before, after)
    assert after["boxes"] < 0.05, (before, after)  # the shared layers did not trade the box output away
    assert "box_w" in result.trainable and "cls_w" in result.trainable
    alone = finetune(student, Dataset({"x": X}), 4, teacher=teacher, progress=False, threads=1, batch_size=16,
                     lr=3e-2, holdout=0.25, output="boxes")  # the first output alone, as before wave 18
    assert "cls_w" not in alone.trainable
    assert _errors(alone.model, teacher)["probs"] == pytest.approx(before["probs"], rel=1e-6)


def test_a_label_output_before_the_scores_does_not_stop_distillation():
    """[ArgMax label, probabilities], as classifier exports often are: the first output is int64 and cannot carry
    a loss (before: bad input); the float outputs are distilled."""
    teacher, student = two_heads(), two_heads(head_noise=0.5)
    for m in (teacher, student):
        m.graph.node.append(helper.make_node("ArgMax", ["probs"], ["label"], axis=1, keepdims=0))
        m.graph.output.insert(0, helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]))
    result = finetune(student, Dataset({"x": X}), 2, teacher=teacher, progress=False, threads=1, batch_size=16,
                      lr=3e-2, holdout=0.25)
    assert result.others == ["boxes"] and result.best_epoch > 0
    assert _errors(result.model, teacher)["probs"] < _errors(student, teacher)["probs"]


def test_an_output_behind_an_op_without_a_gradient_rule_is_left_out_and_freezes_nothing():
    """A third output through TopK (no gradient rule): distilling it would freeze the shared layers the class
    scores train; it is left out instead."""
    teacher, student = two_heads(), two_heads(head_noise=0.5)
    for m in (teacher, student):
        m.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "k"))
        m.graph.node.append(helper.make_node("TopK", ["boxes", "k"], ["top", "top_i"], axis=-1))
        m.graph.output.append(helper.make_tensor_value_info("top", TensorProto.FLOAT, ["N", 2]))
    result = finetune(student, Dataset({"x": X}), 2, teacher=teacher, progress=False, threads=1, batch_size=16,
                      lr=3e-2, holdout=0.25)
    assert result.others == ["boxes"] and not result.frozen
    assert "conv_w" in result.trainable and "cls_w" in result.trainable


def _with_output(model: onnx.ModelProto, name: str, node: onnx.NodeProto | None = None,
                 elem: int = TensorProto.FLOAT, dims=None) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if node is not None:
        out.graph.node.append(node)
    out.graph.output.append(helper.make_tensor_value_info(name, elem, dims))
    return out


def test_the_logits_exported_beside_their_softmax_are_not_matched_twice():
    """[boxes, probs, z] with probs = Softmax(z): z is what the KL reads; matching it again as another output
    overwrote the KL's gradient (review of wave 18)."""
    teacher, student = (_with_output(m, "z", dims=["N", 5]) for m in (two_heads(), two_heads(head_noise=0.5)))
    result = finetune(student, Dataset({"x": X}), 1, teacher=teacher, progress=False, threads=1, batch_size=16,
                      lr=1e-2, holdout=0.25)
    assert result.others == ["boxes"]


def test_outputs_that_are_not_one_row_per_sample_or_not_float32_are_left_out():
    """A (4N, 2) output (rows folded into the batch axis) cannot be cut per sample, and a float64 output's term
    cannot join the float32 loss: both are left out and training runs."""
    def extended(m):
        m = _with_output(m, "rows", helper.make_node("Reshape", ["boxes", "two"], ["rows"]), dims=["R", 2])
        m.graph.initializer.append(numpy_helper.from_array(np.array([-1, 2], np.int64), "two"))
        return _with_output(m, "wide", helper.make_node("Cast", ["boxes"], ["wide"], to=TensorProto.DOUBLE),
                            TensorProto.DOUBLE, ["N", 4])
    teacher, student = extended(two_heads()), extended(two_heads(head_noise=0.5))
    result = finetune(student, Dataset({"x": X}), 2, teacher=teacher, progress=False, threads=1, batch_size=16,
                      lr=3e-2, holdout=0.25)
    assert result.others == ["boxes"] and result.best_epoch > 0
