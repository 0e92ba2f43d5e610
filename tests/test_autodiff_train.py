"""The training graph on real fixtures, freezing behind ops without rules, the trainer and recovery."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff import build_training_graph, read_weights
from onnxprune.autodiff.gradcheck import check_gradients
from onnxprune.autodiff.optim import AdamW, FlatParams, SGD
from onnxprune.autodiff.runner import TrainStep
from onnxprune.autodiff.lr_schedule import cosine, step_decay
from onnxprune.recover.finetune import finetune
from onnxprune.load.data import Dataset
from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RNG = np.random.default_rng(7)


def _feeds(model: onnx.ModelProto, batch: int = 2) -> dict[str, np.ndarray]:
    g = ModelGraph(model)
    return {n: RNG.standard_normal((batch,) + tuple(g.input_shapes[n][1:])).astype(np.float32) for n in g.inputs}


def _model(nodes, inputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "m", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _digits():
    calib, test = np.load(FIXTURES / "digits_calib.npz"), np.load(FIXTURES / "digits_test.npz")
    return calib, test


def _accuracy(model, test) -> float:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return float((sess.run(None, {"input": test["input"]})[0].argmax(1) == test["labels"]).mean())


# ---- whole models ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(glob.glob(str(FIXTURES / "*.onnx"))), ids=lambda p: Path(p).stem)
def test_every_fixture_builds_and_runs(path):
    model = onnx.load(path)
    tg = build_training_graph(model, loss="mse")
    onnx.checker.check_model(tg.model)
    sess = ort.InferenceSession(tg.model.SerializeToString(), providers=["CPUExecutionProvider"])
    data = _feeds(model, 3)
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, data)[0]
    feeds = {**data, **read_weights(model, tg.trainable), tg.target: np.zeros_like(y)}
    outs = sess.run([tg.loss, tg.logits] + [tg.grads[w] for w in tg.trainable], feeds)
    np.testing.assert_allclose(outs[1], y, rtol=1e-4, atol=1e-5)  # the forward part is the model itself
    assert all(np.isfinite(o).all() for o in outs)
    assert sum(float(np.abs(g).sum()) for g in outs[2:]) > 0


@pytest.mark.parametrize("name", ["transformer_tiny", "transformer_tiny_dynamo", "mobile_se", "shufflenet_tiny",
                                  "c2f_tiny_dynamo", "densenet_tiny", "bn_kept", "grouped", "concat", "mlp"])
def test_fixture_gradients_match_finite_differences(name):
    model = onnx.load(FIXTURES / f"{name}.onnx")
    result = check_gradients(model, _feeds(model), coords=3, max_weights=5)
    assert result.worst < 1e-3, result.errors


def test_training_graph_raises_old_opsets():
    x = RNG.standard_normal((2, 1, 6, 6)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
                   {"w": RNG.standard_normal((2, 1, 3, 3)).astype(np.float32)}, opset=13)
    tg = build_training_graph(model, loss="mse")
    assert tg.model.opset_import[-1].version == 17
    assert check_gradients(model, {"x": x}).worst < 1e-3


def test_training_graph_at_a_newer_opset():
    from onnx import version_converter
    model = version_converter.convert_version(onnx.load(FIXTURES / "mobile_se.onnx"), 19)
    tg = build_training_graph(model, loss="mse")
    assert tg.model.opset_import[-1].version == 19
    assert check_gradients(model, _feeds(model), coords=3, max_weights=5).worst < 1e-3


# ---- ops without rules ------------------------------------------------------------------------------

def test_op_without_rule_freezes_exactly_the_weights_upstream():
    # x -> Conv(w1) -> a ; a -> LpNormalization -> Conv(w2) -> b ; a * s -> c ; y = b + c + bias
    f = lambda *s: RNG.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("LpNormalization", ["a"], ["n"], axis=1, name="the_norm"),
        helper.make_node("Conv", ["n", "w2"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["a", "s"], ["c"]),
        helper.make_node("Add", ["b", "c"], ["bc"]),
        helper.make_node("Add", ["bc", "bias"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
                   {"w1": f(4, 2, 3, 3), "w2": f(4, 4, 3, 3), "s": f(4, 1, 1), "bias": f(4, 1, 1)})
    tg = build_training_graph(model, loss="mse")
    assert set(tg.frozen) == {"w1"}  # w1 also reaches the loss through Mul, but its gradient would be partial
    assert tg.frozen["w1"] == "no gradient rule for LpNormalization at node 'the_norm'"
    assert tg.trainable == ["w2", "s", "bias"]
    assert tg.blocked == {"the_norm": tg.frozen["w1"]}
    assert check_gradients(model, {"x": f(2, 2, 5, 5)}).worst < 1e-3  # the rest is still exact


def test_explicit_trainable_list_and_errors():
    model = onnx.load(FIXTURES / "chain.onnx")
    everything = build_training_graph(model).trainable
    tg = build_training_graph(model, trainable=everything[-2:])
    assert tg.trainable == everything[-2:] and set(tg.grads) == set(everything[-2:])
    with pytest.raises(BadInputError, match="not trainable"):
        build_training_graph(model, trainable=["no_such_weight"])
    with pytest.raises(BadInputError, match="unknown loss"):
        build_training_graph(model, loss="hinge")
    with pytest.raises(BadInputError, match="not an output"):
        build_training_graph(model, output="nope")


# ---- the trainer -----------------------------------------------------------------------------------

def test_iobinding_step_matches_plain_run():
    model = onnx.load(FIXTURES / "digits_cnn.onnx")
    calib, _ = _digits()
    tg = build_training_graph(model)
    params = FlatParams(read_weights(model, tg.trainable))
    step = TrainStep(tg, params, threads=1)
    x, y = calib["input"][:16], calib["labels"][:16]
    loss, logits = step({"input": x}, y)
    sess = ort.InferenceSession(tg.model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x, tg.target: y, **{n: params.values[n].copy() for n in params.names}})
    assert loss == pytest.approx(float(ref[0]), rel=1e-6)
    for i, name in enumerate(tg.trainable):
        np.testing.assert_allclose(params.grads[name], ref[2 + i], rtol=1e-5, atol=1e-7)
    params.data *= 0.5  # the binding reads the live buffer
    loss2, _ = step({"input": x}, y)
    ref2 = sess.run([tg.loss], {"input": x, tg.target: y, **{n: params.values[n].copy() for n in params.names}})
    assert loss2 == pytest.approx(float(ref2[0]), rel=1e-6) and loss2 != loss


def test_adamw_and_sgd_steps():
    w = {"a": np.array([[1.0, -2.0]], np.float32), "b": np.array([0.5], np.float32)}
    p = FlatParams(w)
    opt = AdamW(p, weight_decay=0.1)
    p.grad[:] = [0.2, -0.4, 1.0]
    opt.step(0.01)
    # first Adam step moves each entry by lr * sign(g) (bias-corrected); decay hits only the matrix
    expected = np.array([1.0 - 0.01 * 0.1 * 1.0 - 0.01, -2.0 + 0.01 * 0.1 * 2.0 + 0.01, 0.5 - 0.01])
    np.testing.assert_allclose(p.data, expected, rtol=1e-5)
    q = FlatParams(w)
    sgd = SGD(q, momentum=0.9)
    for _ in range(2):
        q.grad[:] = [1.0, 1.0, 1.0]
        sgd.step(0.1)
    np.testing.assert_allclose(q.data, np.array([1.0, -2.0, 0.5]) - 0.1 * (1 + 1.9), rtol=1e-6)


def test_schedules():
    s = cosine(1.0, 100, warmup_steps=10)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(55) == pytest.approx(0.5) and s(100) == pytest.approx(0.0)
    d = step_decay(1.0, 10, 0.5)
    assert d(9) == 1.0 and d(10) == 0.5 and d(25) == 0.25


def test_masks_keep_pruned_weights_at_zero():
    model = onnx.load(FIXTURES / "digits_cnn.onnx")
    calib, _ = _digits()
    w = read_weights(model, ["conv3.weight"])["conv3.weight"]
    mask = RNG.random(w.shape) > 0.5
    data = Dataset({"input": calib["input"][:70, None]}, calib["labels"][:70])  # last batch: 6 samples
    result = finetune(model, data, epochs=1, batch_size=32, lr=1e-2, masks={"conv3.weight": mask}, progress=False,
                      keep="last")
    trained = read_weights(result.model, ["conv3.weight", "fc.weight"])
    assert np.all(trained["conv3.weight"][~mask] == 0.0)
    assert not np.allclose(trained["conv3.weight"][mask], w[mask])
    assert not np.allclose(trained["fc.weight"], read_weights(model, ["fc.weight"])["fc.weight"])
    assert result.history[-1]["epoch"] == 1 and "accuracy" in result.history[-1]
    with pytest.raises(BadInputError, match="not found"):
        finetune(model, data, epochs=1, masks={"no_such_weight": mask}, progress=False)


def test_constant_node_weights_are_trained_and_written_back():
    f = lambda *s: RNG.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(f(3, 4))),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])], {})
    tg = build_training_graph(model, loss="mse")
    assert tg.trainable == ["w"]
    data = Dataset({"x": f(32, 1, 3)}, f(32, 4))
    result = finetune(model, data, epochs=2, loss="mse", batch_size=8, lr=0.05, progress=False)
    assert result.model.graph.node[0].op_type == "Constant"
    assert not np.allclose(read_weights(result.model, ["w"])["w"], read_weights(model, ["w"])["w"])
    assert result.history[-1]["loss"] < result.history[1]["loss"]


def test_best_checkpoint_keeps_the_untrained_model_when_training_diverges():
    model = onnx.load(FIXTURES / "digits_cnn.onnx")
    calib, test = _digits()
    data = Dataset({"input": calib["input"][:64, None]}, calib["labels"][:64])
    val = Dataset({"input": test["input"][:100, None]}, test["labels"][:100])
    result = finetune(model, data, epochs=2, lr=5.0, optimizer="sgd", val_data=val, progress=False)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.best_epoch == 0
    np.testing.assert_array_equal(read_weights(result.model, ["fc.weight"])["fc.weight"],
                                  read_weights(model, ["fc.weight"])["fc.weight"])


def test_distillation_recovers_a_half_pruned_cnn():
    """50% of the channels removed, then 3 epochs of label-free distillation from the dense model on
    the 256 calibration images plus their one-pixel shifts (2304 images, no labels)."""
    from onnxprune.api import prune
    calib, test = _digits()
    dense = FIXTURES / "digits_cnn.onnx"
    pruned = prune(str(dense), 0.5, round_to=1, bench_rounds=0).model
    before = _accuracy(pruned, test)
    padded = np.pad(calib["input"], ((0, 0), (0, 0), (1, 1), (1, 1)))
    shifted = np.concatenate([padded[:, :, 1 + dy:9 + dy, 1 + dx:9 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    result = finetune(pruned, Dataset({"input": shifted[:, None]}), epochs=3, teacher=str(dense), lr=3e-3,
                      batch_size=32, temperature=2.0, progress=False)
    after = _accuracy(result.model, test)
    assert result.trainable and not result.frozen
    assert before < 0.5 and after > 0.9, (before, after)
