"""Under a MACs target, groups that save no MACs (squeeze-excitation internals) are not cut."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import prune
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.select.costless import costless_groups


def _se_model() -> onnx.ModelProto:
    """conv 3x3 (16) -> SE (GAP -> 1x1 to 8 -> Relu -> 1x1 to 16 -> Sigmoid -> Mul) -> conv 3x3 (16)."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)
    inits = [w("w1", 16, 3, 3, 3), w("b1", 16), w("s1", 8, 16, 1, 1), w("sb1", 8), w("s2", 16, 8, 1, 1),
             w("sb2", 16), w("w2", 16, 16, 3, 3), w("b2", 16)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["y"], ["yr"]),
             helper.make_node("GlobalAveragePool", ["yr"], ["p"]),
             helper.make_node("Conv", ["p", "s1", "sb1"], ["q"]),
             helper.make_node("Relu", ["q"], ["qr"]),
             helper.make_node("Conv", ["qr", "s2", "sb2"], ["r"]),
             helper.make_node("Sigmoid", ["r"], ["g"]),
             helper.make_node("Mul", ["yr", "g"], ["z"]),
             helper.make_node("Conv", ["z", "w2", "b2"], ["out"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16, 32, 32])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_squeeze_channels_are_costless_and_kept_under_a_macs_target():
    model = _se_model()
    dep = build_dependency(ModelGraph(model))
    se = [g for g in costless_groups(dep)]
    assert [g.size for g in se] == [8]          # the squeeze channels; the 16-channel conv group costs MACs
    for criterion in ("l2", "reconstruction"):
        feeds = [{"x": v} for v in np.random.default_rng(1).standard_normal((16, 1, 3, 32, 32)).astype(np.float32)]
        kwargs = {"calib": feeds, "recover": "none"} if criterion != "l2" else {}
        r = prune(model, target_macs=0.5, criterion=criterion, scope="global", round_to=1, bench_rounds=0, **kwargs)
        s1 = next(i for i in r.model.graph.initializer if i.name == "s1")
        w1 = next(i for i in r.model.graph.initializer if i.name == "w1")
        assert s1.dims[0] == 8 and w1.dims[0] < 16, criterion
