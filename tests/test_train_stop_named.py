"""Fine-tuning a model whose output comes out of an If (the layers before it read inside the branches,
as the VAD and wake-word exports do) has nothing to train; the error names the If instead of a bare
"nothing to train" that left the user guessing."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff.builder import build_training_graph
from onnxprune.errors import BadInputError


def _output_if_model():
    """x (1, 4) -> MatMul 8 -> If(use): then b, else b * 2 -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.array([2.0], np.float32), "two")]
    out = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8])  # noqa: E731
    then = helper.make_graph([helper.make_node("Identity", ["b"], ["t"])], "then", [], [out("t")])
    other = helper.make_graph([helper.make_node("Mul", ["b", "two"], ["e"])], "else", [], [out("e")])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["b"]),
             helper.make_node("If", ["use"], ["y"], name="the_if", then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "outif", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                               helper.make_tensor_value_info("use", TensorProto.BOOL, [1])],
                              [out("y")], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_nothing_to_train_names_the_if():
    with pytest.raises(BadInputError) as caught:
        build_training_graph(_output_if_model(), loss="mse", input_shapes={"x": (1, 4), "use": (1,)})
    assert "nothing to train" in str(caught.value) and "If 'the_if'" in str(caught.value)
