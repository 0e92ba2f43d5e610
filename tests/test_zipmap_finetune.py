"""Fine-tuning a scikit-learn export (skl2onnx: an int64 label and a ZipMap's list of maps as outputs):
the batch-view probe met the list output and crashed (AttributeError, exit 3); now it trains one sample
per step, and with no float output to distil the run is bad input (exit 2, one line)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli.main import main
from onnxprune.recover.batch_view import batch_view


def _sklearn_like():
    """x (N, 4) -> MatMul 16 -> Relu -> MatMul 3 -> Softmax -> [ArgMax label, ZipMap probabilities]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["z"]), helper.make_node("Softmax", ["z"], ["p"], axis=1),
             helper.make_node("ArgMax", ["p"], ["label"], axis=1, keepdims=0),
             helper.make_node("ZipMap", ["p"], ["probs"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    probs = helper.make_tensor_value_info("probs", TensorProto.UNDEFINED, None)
    probs.type.sequence_type.elem_type.map_type.key_type = TensorProto.INT64
    probs.type.sequence_type.elem_type.map_type.value_type.tensor_type.elem_type = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "skl", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]), probs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])


def test_batch_view_of_a_list_output_is_none_not_a_crash():
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 4)).astype(np.float32)} for _ in range(2)]
    assert batch_view(_sklearn_like(), feeds) is None


def test_finetune_with_no_float_output_is_bad_input(tmp_path, capsys):
    path, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    path.write_bytes(_sklearn_like().SerializeToString())
    np.savez(data, x=np.random.default_rng(2).standard_normal((16, 1, 4)).astype(np.float32))
    code = main(["prune", str(path), "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5", "--calib", str(data),
                 "--finetune", "1", "--bench-rounds", "0"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(err) == 1 and "internal error" not in err[0]
