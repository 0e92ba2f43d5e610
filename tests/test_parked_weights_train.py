"""Reading and writing the weights training updates when a large model's weights are parked in a work
file (load/external.unload binds them by absolute path): onnx's own reader refused the path, so
fine-tuning a MiniLM export crashed (ValidationError, exit 3) before its first step."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff.weights import read_weights, write_weights
from onnxprune.load.external import is_bound, unload


def _mlp():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 64)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((64, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_parked_weights_are_read_and_written():
    model = _mlp()
    dense = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    parked = unload(model, min_bytes=512)
    assert is_bound(next(i for i in parked.graph.initializer if i.name == "w1"))
    read = read_weights(parked, ["w1", "w2"])
    np.testing.assert_array_equal(read["w1"], dense["w1"])
    written = write_weights(parked, {"w1": read["w1"] * 2})
    back = {i.name: numpy_helper.to_array(i) for i in written.graph.initializer if i.name == "w1"}
    np.testing.assert_array_equal(back["w1"], dense["w1"] * 2)
