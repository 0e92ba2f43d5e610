"""fold_constants: constant-only nodes become initializers; QDQ, inputs and random ops are left alone."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.load.data import synthetic_feed
from onnxprune.load.fold import fold_constants
from onnxprune.load.runtime import session

F = TensorProto.FLOAT


def model_with_constant_subgraphs() -> onnx.ModelProto:
    """Conv weight = ConstantOfShape fill; Gemm weight = Reshape(Cast(int constant)); a Shape chain of the input."""
    nodes = [
        helper.make_node("ConstantOfShape", ["w_shape"], ["w"], value=numpy_helper.from_array(np.array([0.02], np.float32))),
        helper.make_node("Conv", ["x", "w", "b"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Cast", ["fc_int"], ["fc_float"], to=F),
        helper.make_node("Reshape", ["fc_float", "fc_shape"], ["fc"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
        helper.make_node("DequantizeLinear", ["q", "q_scale"], ["dq"]),
        helper.make_node("Add", ["y", "dq"], ["out"]),
        helper.make_node("RandomNormal", [], ["noise"], shape=[1, 3]),
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Add", ["xs", "one"], ["xs1"]),  # depends on the input: never folded
        helper.make_node("Identity", ["noise"], ["noise_out"]),
    ]
    inits = {"w_shape": np.array([4, 2, 1, 1], np.int64), "b": np.arange(4, dtype=np.float32),
             "fc_int": np.arange(3 * 4 * 3 * 3, dtype=np.int32) % 5, "fc_shape": np.array([3, 36], np.int64),
             "q": np.array([[1, -2, 3]], np.int8), "q_scale": np.array(0.5, np.float32), "one": np.array(1, np.int64)}
    initializers = [numpy_helper.from_array(v, k) for k, v in inits.items()]
    inputs = [helper.make_tensor_value_info("x", F, [1, 2, 3, 3])]
    graph = helper.make_graph(nodes, "fold", inputs,
                              [helper.make_tensor_value_info("out", F, [1, 3]),
                               helper.make_tensor_value_info("xs1", TensorProto.INT64, [4]),
                               helper.make_tensor_value_info("noise_out", F, [1, 3])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_folds_weight_subgraphs_and_keeps_the_rest():
    model = model_with_constant_subgraphs()
    before = model.SerializeToString()
    folded = fold_constants(model)
    assert model.SerializeToString() == before  # the input is never modified
    onnx.checker.check_model(folded, full_check=True)
    ops = [n.op_type for n in folded.graph.node]
    assert "ConstantOfShape" not in ops and "Reshape" not in ops and "Cast" not in ops
    assert ops.count("DequantizeLinear") == 1  # QDQ stays QDQ
    assert "RandomNormal" in ops and "Shape" in ops  # random and input-dependent nodes stay
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    assert inits["w"].shape == (4, 2, 1, 1) and np.all(inits["w"] == np.float32(0.02))
    assert inits["fc"].shape == (3, 36) and inits["fc"].dtype == np.float32
    assert "w_shape" not in inits and "fc_int" not in inits  # consumed only by folded nodes
    dense, small = session(model), session(folded)
    feed = synthetic_feed(dense, {"x": (1, 2, 3, 3)})
    for a, b, name in zip(dense.run(None, feed), small.run(None, feed), ["out", "xs1", "noise_out"]):
        if name != "noise_out":
            np.testing.assert_array_equal(a, b)


def test_ir3_initializers_become_constants():
    """Caffe2-era zoo models: IR 3, opset 9, every initializer also a graph input, weights as fills."""
    w_shape = numpy_helper.from_array(np.array([4, 2, 1, 1], np.int64), "w_shape")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], value=numpy_helper.from_array(np.array([0.02], np.float32))),
             helper.make_node("Conv", ["x", "w", "b"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", F, [1, 2, 3, 3])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in (w_shape, b)]
    graph = helper.make_graph(nodes, "ir3", inputs, [helper.make_tensor_value_info("y", F, [1, 4, 3, 3])], [w_shape, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)
    onnx.checker.check_model(model, full_check=True)
    folded = fold_constants(model)
    assert folded.ir_version == 4
    assert [i.name for i in folded.graph.input] == ["x"]
    assert sorted(t.name for t in folded.graph.initializer) == ["b", "w"]
    onnx.checker.check_model(folded, full_check=True)


def test_nothing_to_fold_returns_an_equal_copy():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", F, [2])],
                              [helper.make_tensor_value_info("y", F, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    folded = fold_constants(model)
    assert folded is not model and folded.SerializeToString() == model.SerializeToString()
