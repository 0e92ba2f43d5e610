"""`onnxprune sensitivity` on what the survey exports have and prune already handles (wave-20 smoke):
khmersm (a batch-1 Reshape, then attention heads merged with the batch) and sklearn_mlp (a ZipMap output)
exited 3: the samples were joined into batches the model refuses, the heads' cut raised the rewrite's
error for the whole command, and the cosine read the ZipMap's maps as numbers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.api import analyse
from onnxprune.cli.main import main
from onnxprune.load.data import Dataset
from onnxprune.select.sensitivity import group_sensitivity
from test_rewritable import DIM, HIDDEN, heads_model


def test_a_group_no_rewrite_can_cut_is_left_out_and_the_rest_measured():
    dep = analyse(heads_model(), {"x": (1, 6, DIM)})
    data = Dataset({"x": np.random.default_rng(1).standard_normal((4, 1, 6, DIM)).astype(np.float32)})
    rows = group_sensitivity(dep, data, (0.5,))
    measured = {r["channels"] for r in rows}
    assert HIDDEN in measured and len(rows) == len([g for g in dep.groups if g.prunable > 1]) - 1


def _mlp_with_a_map_output() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["y"]),
             helper.make_node("ZipMap", ["y"], ["maps"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    seq = onnx.TypeProto()
    seq.sequence_type.elem_type.map_type.key_type = TensorProto.INT64
    seq.sequence_type.elem_type.map_type.value_type.tensor_type.elem_type = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
                               helper.make_value_info("maps", seq)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])


def test_sensitivity_reads_the_tensor_outputs_of_a_model_with_a_map_output(tmp_path, capsys):
    path, calib = tmp_path / "m.onnx", tmp_path / "c.npz"
    onnx.save(_mlp_with_a_map_output(), str(path))
    np.savez(calib, x=np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32))
    assert main(["sensitivity", str(path), "--calib", str(calib), "--ratios", "0.5"]) == 0
    assert "cos@0.5" in capsys.readouterr().out


def test_sensitivity_feeds_a_baked_batch_model_one_sample_at_a_time(tmp_path, capsys):
    from conftest import baked_batch_model
    path, calib = tmp_path / "b.onnx", tmp_path / "c.npz"
    onnx.save(baked_batch_model(), str(path))
    np.savez(calib, x=np.random.default_rng(1).standard_normal((8, 1, 6)).astype(np.float32))
    assert main(["sensitivity", str(path), "--calib", str(calib), "--ratios", "0.5"]) == 0
    assert "cos@0.5" in capsys.readouterr().out
