"""The input check of an in-memory model whose weights are read from a file (load/external.bind or
unload: absolute locations). The in-memory checker refuses absolute locations, so `--steps` on the
MiniLM dynamo export (its step-1 model keeps weights bound to the user's .onnx.data) exited 2 at
step 2 with "model: fails the ONNX checker (... should be a relative path ...)"."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import BadInputError
from onnxprune.load.external import is_bound, unload
from onnxprune.load.model import check_supported


def _mlp(broken: bool = False):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 64)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((64, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h" if not broken else "nowhere", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_model_with_weights_bound_to_a_file_passes_the_input_check():
    parked = unload(_mlp(), min_bytes=512)
    assert is_bound(next(i for i in parked.graph.initializer if i.name == "w1"))
    check_supported(parked)


def test_a_broken_model_with_bound_weights_still_fails_it():
    parked = unload(_mlp(broken=True), min_bytes=512)
    with pytest.raises(BadInputError, match="model: fails the ONNX checker .*nowhere"):
        check_supported(parked)


def test_the_validate_commands_dense_check_takes_a_bound_model(tmp_path):
    """`onnxprune validate DENSE PRUNED` checks the dense model it loaded; loaded lazily (external data of
    64 MB or more, as minilm_dynamo's) it exited 2 on the same absolute locations."""
    from onnxprune.load.checker import check_model_any_size
    parked = unload(_mlp(), min_bytes=512)
    check_model_any_size(parked, "dense.onnx: the dense model", path=str(tmp_path / "dense.onnx"))
