"""Training a model exported with its batch fixed at 1 several samples per step (recover/batch_view.py)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.batch_view import batch_view
from onnxprune.recover.finetune import finetune


def _time_first(pin_batch: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x (1, 2, 4, 6) -> Conv -> Relu -> Conv -> output (6, 1, 3, 4): time first, like ddddocr's; with
    pin_batch the final shape is a constant holding the batch of 1 (a graph that cannot batch)."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.normal(size=(5, 2, 1, 1)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(3, 5, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c"]),
             helper.make_node("Transpose", ["c"], ["t"], perm=[3, 0, 1, 2])]
    inits = [w1, w2]
    if pin_batch:
        inits.append(numpy_helper.from_array(np.array([6, 1, 12], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["t", "shape"], ["y"]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 1, 12])
    else:
        nodes.append(helper.make_node("Identity", ["t"], ["y"]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 1, 3, 4])
    graph = helper.make_graph(nodes, "time_first", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 6])],
                              [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _samples(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 2, 4, 6)).astype(np.float32)


def test_the_view_runs_any_batch_with_the_batch_first_and_each_sample_unchanged():
    model, x = _time_first(), _samples(3)
    view = batch_view(model, [{"x": x[0]}, {"x": x[1]}])
    assert view is not None
    joined = session(view).run(None, {"x": x.reshape(3, 2, 4, 6)})[0]
    assert joined.shape == (3, 6, 3, 4)
    sess = session(model)
    for i in range(3):
        np.testing.assert_allclose(joined[i], sess.run(None, {"x": x[i]})[0][:, 0], rtol=1e-5, atol=1e-5)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 2, 4, 6]  # not modified


def test_a_graph_that_pins_the_batch_gets_no_view():
    x = _samples(2)
    assert batch_view(_time_first(pin_batch=True), [{"x": x[0]}, {"x": x[1]}]) is None


def test_finetune_trains_a_fixed_batch_model_in_batches_and_writes_back_into_it(caplog):
    teacher, student, x = _time_first(seed=0), _time_first(seed=3), _samples(48)
    data = Dataset({"x": x})
    with caplog.at_level(logging.INFO, logger="onnxprune"):
        res = finetune(student, data, 3, teacher=teacher, lr=3e-2, batch_size=8, progress=False, loss="distill",
                       distill="mse")
    assert "several samples per step" in caplog.text
    assert [d.dim_value for d in res.model.graph.input[0].type.tensor_type.shape.dim] == [1, 2, 4, 6]
    assert session(res.model).run(None, {"x": x[0]})[0].shape == (6, 1, 3, 4)
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch > 0 and min(losses[1:]) < losses[0]  # training in batches moved toward the teacher


def test_a_batchable_model_with_a_time_first_output_is_trained_batch_first():
    model, x = _time_first(), _samples(2)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"  # batchable, output still (T, N, ...)
    view = batch_view(model, [{"x": x[0]}, {"x": x[1]}])
    assert view is not model and session(view).run(None, {"x": x.reshape(2, 2, 4, 6)})[0].shape == (2, 6, 3, 4)
    batch_first = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])]), opset_imports=[helper.make_opsetid("", 17)])
    one = np.ones((1, 3), np.float32)
    assert batch_view(batch_first, [{"x": one}, {"x": -one}]) is batch_first  # nothing to change


def test_a_time_first_output_that_names_the_batch_symbol_trains_batch_first():
    """captcha_crnn: input (N, ...), output declared (T, N, classes). The view's Transpose must not keep the
    stale (T, N, ...) claim: ONNX Runtime then unifies N with T and folds the loss gradient's Shape to
    (T, T, ...), so every step whose batch is not T failed in a Reshape."""
    teacher, student, x = _time_first(seed=0), _time_first(seed=3), _samples(40)
    for model in (teacher, student):
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "N"
    view = batch_view(student, [{"x": x[0]}, {"x": x[1]}])
    assert view is not None and session(view).run(None, {"x": x[:4].reshape(4, 2, 4, 6)})[0].shape == (4, 6, 3, 4)
    res = finetune(student, Dataset({"x": x}), 2, teacher=teacher, lr=3e-2, batch_size=8, progress=False,
                   loss="distill", distill="kl")  # KL: its gradient is reshaped back to Shape(output)
    losses = [h["val_loss"] for h in res.history]
    assert min(losses[1:]) < losses[0]
    assert [d.dim_param or d.dim_value for d in res.model.graph.output[0].type.tensor_type.shape.dim] == [6, "N", 3, 4]
