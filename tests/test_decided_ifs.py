"""fisher through Ifs the analysed shapes decide (PyTorch exports of `squeeze(0)` and batch checks: the
condition is Equal(Size/Shape(x), k), possibly negated): the probe view takes the branch those shapes
take, so gradients reach the layers before it. The VAD exports with their decoder in such Ifs fell back
to reconstruction ("no output gradients")."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.score.branch_outputs import decided_view


def _decided_model():
    """x (1, 4) -> MatMul 16 -> Relu -> MatMul 8 -> If(Not(Size(x) == 3)): then b, else b * rate -> MatMul 3."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w3"),
             numpy_helper.from_array(np.array(3, np.int64), "three")]
    out = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8])  # noqa: E731
    then = helper.make_graph([helper.make_node("Identity", ["b"], ["t"])], "then", [], [out("t")])
    other = helper.make_graph([helper.make_node("Cast", ["rate"], ["r"], to=TensorProto.FLOAT),
                               helper.make_node("Mul", ["b", "r"], ["e"])], "else", [], [out("e")])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["b"]), helper.make_node("Size", ["x"], ["n"]),
             helper.make_node("Equal", ["n", "three"], ["is3"]), helper.make_node("Not", ["is3"], ["cond"]),
             helper.make_node("If", ["cond"], ["c"], then_branch=then, else_branch=other),
             helper.make_node("MatMul", ["c", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "decided", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                                 helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(n: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 4)).astype(np.float32), "rate": np.array(16000, np.int64)} for _ in range(n)]


def test_the_view_takes_the_decided_branch_and_computes_the_same():
    model = _decided_model()
    view = decided_view(model, {"x": (1, 4), "rate": ()})
    assert view is not None and not any(n.op_type == "If" for n in view.graph.node)
    feed = _feeds(1)[0]
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    seen = ort.InferenceSession(view.SerializeToString(), providers=["CPUExecutionProvider"])
    got = seen.run(None, {k: v for k, v in feed.items() if k in {i.name for i in seen.get_inputs()}})[0]
    np.testing.assert_allclose(got, dense, rtol=1e-6)


def test_fisher_reaches_the_layers_before_a_decided_if(caplog):
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        result = onnxprune.prune(_decided_model(), calib=_feeds(16), ratio=0.5, round_to=1, criterion="fisher",
                                 bench_rounds=0)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "no output gradients" not in said, said
    assert result.plan.summary()["removed"] == 8
