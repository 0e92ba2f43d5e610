"""The latency profile's synthetic sample keeps integer inputs inside the tables they index, as every
other synthetic sample does: BERT's token types index a 2-row table, the profile drew ids up to 7, ONNX
Runtime refused the Gather, and the profile fell back to timing each node alone (minilm_ts, minilm_dynamo)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.select.latency_profile import _Profiled


def _token_types():
    """ids (1, 8) int64 -> Gather from a (2, 16) table -> MatMul 16x4."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 16)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["y"])]
    graph = helper.make_graph(nodes, "tt", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_profiled_sample_stays_inside_the_table(tmp_path):
    profiled = _Profiled(_token_types(), 1, {"ids": (1, 8)}, str(tmp_path / "p"))
    assert int(profiled.feed["ids"].max()) < 2
    profiled.run()
