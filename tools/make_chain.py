#!/usr/bin/env python3
"""A generated graph of N nodes for scale tests: residual blocks Conv-Relu-Conv-Add on a small map,
so the cost of analysing and pruning it is the node count, not the weights.

    python tools/make_chain.py 100000 chain.onnx
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper


def chain_model(nodes: int, channels: int = 8, size: int = 4, kernel: int = 1) -> onnx.ModelProto:
    """About `nodes` nodes: nodes // 4 blocks of Conv-Relu-Conv-Add, then a 1x1 Conv head.

    Every block's inner width is its own channel group; the residual stream is one group for all."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph([], "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, size, size])])
    pads = [kernel // 2] * 4
    x = "x"
    for b in range(max(1, nodes // 4)):
        for k in (0, 2):  # built in place: 25,000 blocks of make_tensor + list copies add up
            _add_tensor(graph, f"w{b}_{k}", rng.standard_normal((channels, channels, kernel, kernel), np.float32) * 0.3)
            _add_tensor(graph, f"c{b}_{k}", np.zeros(channels, np.float32))
        names = [f"b{b}_{k}" for k in range(4)]
        graph.node.extend([helper.make_node("Conv", [x, f"w{b}_0", f"c{b}_0"], [names[0]], pads=pads),
                           helper.make_node("Relu", [names[0]], [names[1]]),
                           helper.make_node("Conv", [names[1], f"w{b}_2", f"c{b}_2"], [names[2]], pads=pads),
                           helper.make_node("Add", [x, names[2]], [names[3]])])
        x = names[3]
    graph.node.append(helper.make_node("Conv", [x, "head", "head_b"], ["y"]))
    _add_tensor(graph, "head", rng.standard_normal((4, channels, 1, 1), np.float32))
    _add_tensor(graph, "head_b", np.zeros(4, np.float32))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _add_tensor(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    t = graph.initializer.add()
    t.name, t.data_type = name, TensorProto.FLOAT
    t.dims.extend(value.shape)
    t.raw_data = value.astype("<f4").tobytes()


if __name__ == "__main__":
    onnx.save(chain_model(int(sys.argv[1])), sys.argv[2])
