"""PyTorch's nn.MultiheadAttention as both exporters write it (fixtures/transformers/make_vit_tiny.py: tools/make_vit.py's
ViT at width 32, 2 layers of 4 heads of 8).

The packed in-projection [.., 3E] is split by Reshape into [.., 3, E] and q, k, v are Gathers of the
constant scalars 0, 1, 2 on the 3-axis: that axis only selects, so head h of q, k and v (columns
h*8.., E + h*8.., 2E + h*8.. of in_proj) and its rows of out_proj are one channel. Removing heads is
exact (the zero-channel oracle), and a 3-axis used any other way still freezes the heads.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from conftest import FIXTURES, analyse, oracle_gap, random_plan
from onnxprune.apply.rewrite import apply_plan
from onnxprune.couple.dependency import build_dependency
from onnxprune.couple.ops import Slot
from onnxprune.graph.model_graph import ModelGraph

HERE = FIXTURES / "transformers"
MODELS = ["vit_tiny.onnx", "vit_tiny_dynamo.onnx"]
E, HEADS, SIZE = 32, 4, 8


def in_proj(model: onnx.ModelProto, layer: int) -> str:
    """The in-projection weight [E, 3E] of `layer` (the MatMul feeding the in_proj_bias Add)."""
    adds = [n for n in model.graph.node if n.op_type == "Add" and f"layers.{layer}.self_attention.in_proj_bias" in n.input]
    producer = {o: n for n in model.graph.node for o in n.output}
    other = next(i for i in adds[0].input if "in_proj_bias" not in i)
    return producer[other].input[1]


@pytest.mark.parametrize("name", MODELS)
def test_q_k_v_columns_of_a_head_are_one_channel(name):
    model, dep = analyse(HERE / name)
    for layer in (0, 1):
        columns = dep.elements(Slot(in_proj(model, layer), 1)).reshape(3, HEADS, SIZE)
        assert (columns == columns[:1, :, :1]).all()  # q, k and v of head h share head h's channel
        assert len(set(columns[0, :, 0])) == HEADS
        group = dep.groups[dep.channel_group[columns[0, 0, 0]]]
        assert group.size == HEADS and group.prunable == HEADS


@pytest.mark.parametrize("name", MODELS)
def test_removing_heads_is_exact(name):
    model, dep = analyse(HERE / name)
    for seed in (0, 1):
        plan = random_plan(dep, 0.5, seed)
        assert oracle_gap(model, plan) < 1e-5
    pruned = apply_plan(plan)
    widths = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert widths[in_proj(model, 0)] == [E, 3 * E // 2]
    assert widths["layers.0.self_attention.out_proj.weight"] == [E, E // 2]


def test_a_selector_axis_used_otherwise_keeps_the_heads():
    """The same split with the 3-axis reduced (a Sum over q, k, v) instead of picked: no head prunes."""
    model, _ = analyse(HERE / "vit_tiny.onnx")
    graph = model.graph
    gathers = [n for n in graph.node if n.op_type == "Gather" and "layers.0/self_attention" in n.name]
    source = gathers[0].input[0]
    axes = numpy_helper.from_array(np.array([0], np.int64), "sum_axes")
    graph.initializer.append(axes)
    reduce = helper.make_node("ReduceSum", [source, "sum_axes"], ["qkv_sum"], keepdims=1)
    graph.node.append(reduce)
    graph.output.append(helper.make_tensor_value_info("qkv_sum", onnx.TensorProto.FLOAT, None))
    dep = build_dependency(ModelGraph(model))
    columns = dep.elements(Slot(in_proj(model, 0), 1))
    assert dep.groups[dep.channel_group[columns[0]]].prunable == 0
