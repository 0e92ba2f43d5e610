"""recover/logit_weights.py: the weighted re-solve of the layers giving an output Sigmoid's logits."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.recover import logit_weights as lw


def _weighted_error(x: np.ndarray, y: np.ndarray, theta: np.ndarray) -> float:
    return float(np.sum(lw.weights(y) * (x @ theta - y) ** 2))


def test_weighted_resolve_matches_weighted_lstsq_and_beats_the_plain_fit():
    rng = np.random.default_rng(0)
    rows, f = 4000, 6
    x = np.c_[rng.standard_normal((rows, f)), np.ones(rows)].astype(np.float32)  # the intercept column last
    true = rng.standard_normal((f + 1, 2))
    true[-1] = -6.0                                      # mostly far background: p ~ 1e-3, as a detector's classes
    y = (x @ true + 1.5 * np.sin(3 * x[:, :1]) * (x[:, :1] > 1)).astype(np.float32)  # a misfit the line can't hold
    extra = {lw.KEY: np.array([True, True])}
    for k in range(4):                                   # batches as sequential.py hands them over, none held
        lw.add(extra, x[k::4], y[k::4], held=False)
    plain = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0]
    diag = np.r_[np.ones(f), 0.0]
    got = lw.resolve(extra, plain, 1e-12, diag, plain)
    root = np.sqrt(lw.weights(y)).astype(np.float64)
    for j in range(2):
        want = np.linalg.lstsq(x * root[:, j:j + 1], y[:, j] * root[:, j], rcond=None)[0]
        np.testing.assert_allclose(got[:, j], want, rtol=1e-3, atol=1e-3)
        assert _weighted_error(x, y[:, j:j + 1], got[:, j:j + 1]) < 0.9 * _weighted_error(x, y[:, j:j + 1], plain[:, j:j + 1])


def test_unmarked_columns_keep_the_plain_solution():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 3)).astype(np.float32)
    y = rng.standard_normal((500, 2)).astype(np.float32)
    extra = {lw.KEY: np.array([False, True])}
    lw.add(extra, x, y, held=False)
    theta = rng.standard_normal((3, 2))
    got = lw.resolve(extra, theta, 1e-6, np.ones(3), theta)
    np.testing.assert_array_equal(got[:, 0], theta[:, 0])
    assert not np.allclose(got[:, 1], theta[:, 1])


def test_columns_that_only_moved_match_and_squashed_ones_do_not():
    rng = np.random.default_rng(2)
    y = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    logits = np.concatenate([y[:, 1:].reshape(1, 2, -1), rng.standard_normal((1, 2, 16)).astype(np.float32)], 2)
    mask = lw.matching_columns(y, 1, logits)
    assert mask.tolist() == [False, True, True]
    assert not lw.matching_columns(np.zeros((1, 2, 4, 4), np.float32), 1, np.zeros(8, np.float32)).any()  # constant


def _head() -> onnx.ModelProto:
    """x -> conv box, conv cls -> Concat -> Split -> (box: Softmax, cls: Sigmoid) -> Concat -> y, as a YOLO head."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("wb", (2, 3, 1, 1)), ("wc", (3, 3, 1, 1)))]
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "split"))
    nodes = [helper.make_node("Conv", ["x", "wb"], ["box"], name="box"),
             helper.make_node("Conv", ["x", "wc"], ["cls"], name="cls"),
             helper.make_node("Concat", ["box", "cls"], ["both"], axis=1),
             helper.make_node("Split", ["both", "split"], ["b", "c"], axis=1),
             helper.make_node("Softmax", ["b"], ["bs"], axis=1), helper.make_node("Mul", ["bs", "bs"], ["bm"]),
             helper.make_node("Sigmoid", ["c"], ["p"]), helper.make_node("Concat", ["bm", "p"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_mark_finds_the_class_conv_and_not_the_box_conv():
    def consumer(name, out):
        return SimpleNamespace(name=name, kind="output", target=out, conv={}, kept_out=np.arange(3 if name == "cls" else 2),
                               features=3, extra={})
    cons = [consumer("box", "box"), consumer("cls", "cls")]
    x = np.random.default_rng(4).standard_normal((1, 3, 4, 4)).astype(np.float32)
    assert lw.mark(_head(), cons, {"x": x}) == ["cls"]
    assert cons[1].extra[lw.KEY].all() and lw.KEY not in cons[0].extra


def _mlp_sigmoid(matmul: bool = False) -> onnx.ModelProto:
    """x [n, 4] -> Gemm (8 hidden) -> Relu -> Gemm, or MatMul + Add (3 logits, biased far below 0) -> Sigmoid -> y."""
    rng = np.random.default_rng(5)
    w2 = rng.standard_normal((3, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
             numpy_helper.from_array(np.ascontiguousarray(w2.T) if matmul else w2, "w2"),
             numpy_helper.from_array(np.full(3, -4.0, np.float32), "b2")]
    head = ([helper.make_node("MatMul", ["r", "w2"], ["m"]), helper.make_node("Add", ["m", "b2"], ["z"])] if matmul
            else [helper.make_node("Gemm", ["r", "w2", "b2"], ["z"], transB=1)])
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             *head, helper.make_node("Sigmoid", ["z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("matmul", [False, True])
def test_sequential_logit_lowers_the_weighted_logit_error_of_a_pruned_head(matmul):
    from onnxprune.apply.rewrite import apply_plan
    from onnxprune.couple.dependency import build_dependency
    from onnxprune.graph.model_graph import ModelGraph
    from onnxprune.load.data import Dataset
    from onnxprune.load.runtime import session
    from onnxprune.recover.reconstruction import add_missing_biases
    from onnxprune.recover.sequential import reconstruct
    from onnxprune.score.criteria import score
    from onnxprune.score.logit_outputs import logit_view
    from onnxprune.select.plan import select_uniform

    model = _mlp_sigmoid(matmul)
    x = np.random.default_rng(6).standard_normal((600, 4)).astype(np.float32)
    data = Dataset({"x": x[:, None]})
    working = add_missing_biases(model, data.sample_shapes())
    dep = build_dependency(ModelGraph(working, data.sample_shapes()))
    plan = select_uniform(dep, score(dep, "l2"), 0.5)
    dense = session(logit_view(working)).run(None, {"x": x})[0].astype(np.float64)
    w = lw.weights(dense)
    errors = {}
    for weighted in (False, True):
        pruned = apply_plan(plan, reconstruct(dep, plan.removed, data, logit_weighted=weighted))
        z = session(logit_view(pruned)).run(None, {"x": x})[0]
        errors[weighted] = float(np.sum(w * (z - dense) ** 2))
    assert errors[True] < errors[False]
