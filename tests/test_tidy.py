"""The linear tidy (apply/tidy.py) gives byte for byte what the onnx-graphsurgeon round trip gave."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.apply import rewrite
from onnxprune.apply.tidy import tidied

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def graphsurgeon_tidy(model: onnx.ModelProto) -> onnx.ModelProto:
    """rewrite._tidy as it was: always the graphsurgeon round trip."""
    saved = rewrite.tidied
    rewrite.tidied = lambda m: None
    try:
        return rewrite._tidy(copy.deepcopy(model), model)
    finally:
        rewrite.tidied = saved


def fast_tidy(model: onnx.ModelProto) -> onnx.ModelProto:
    assert tidied(copy.deepcopy(model)) is not None, "the fast path should cover this graph"
    return rewrite._tidy(copy.deepcopy(model), model)


def shuffled_with_dead_nodes(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Nodes out of order, a dead branch, an unused initializer, odd attribute encodings."""
    m = copy.deepcopy(model)
    nodes = list(m.graph.node)
    random.Random(seed).shuffle(nodes)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    first = m.graph.input[0].name
    m.graph.node.append(helper.make_node("Relu", [first], ["dead_relu"], name=""))
    m.graph.node.append(helper.make_node("Identity", ["dead_relu"], ["dead_id"], doc_string="gone"))
    m.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "unused_init"))
    for node in m.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.INT:
                attr.doc_string = "re-encoded"  # graphsurgeon drops it
                break
    return m


CASES = sorted(p.name for p in FIXTURES.glob("*.onnx"))


@pytest.mark.parametrize("name", CASES)
def test_same_bytes_as_graphsurgeon(name):
    model = onnx.load(str(FIXTURES / name))
    for variant in (model, shuffled_with_dead_nodes(model, 0), shuffled_with_dead_nodes(model, 1)):
        assert fast_tidy(variant).SerializeToString() == graphsurgeon_tidy(variant).SerializeToString()


def test_constant_node_without_tensor_name_and_empty_optional_inputs():
    w = numpy_helper.from_array(np.ones((2, 2), np.float32))
    w.ClearField("name")
    nodes = [helper.make_node("Constant", [], ["w"], value=w),
             helper.make_node("Clip", ["x", "", "hi"], ["c"]),
             helper.make_node("MatMul", ["c", "w"], ["y"], name="")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
                              [numpy_helper.from_array(np.float32(6), "hi")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert fast_tidy(model).SerializeToString() == graphsurgeon_tidy(model).SerializeToString()


def test_subgraphs_take_the_graphsurgeon_path():
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)], "g",
                              [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                               helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    assert tidied(helper.make_model(graph)) is None


def test_cycle_takes_the_graphsurgeon_path():
    graph = helper.make_graph([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    assert tidied(helper.make_model(graph)) is None
