"""`onnxprune sparsify` on a model whose dynamic axis fails at size 1 (oww_melspec: a Conv over the audio
length): the one-line error says "sizes with --input-shape", which sparsify did not accept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli.main import main
from onnxprune.graph.model_graph import DEFAULT_DYNAMIC_DIM

KERNEL = DEFAULT_DYNAMIC_DIM + 1  # longer than the length a dynamic axis gets by default


def _conv_over_length() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 1, KERNEL)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "c",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "L"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, "M"])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_sparsify_takes_the_input_shape_its_error_names(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_conv_over_length(), str(path))
    assert main(["sparsify", str(path), "-o", str(tmp_path / "a.onnx"), "--sparsity", "0.5"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["sparsify", str(path), "-o", str(tmp_path / "b.onnx"), "--sparsity", "0.5",
                 "--input-shape", f"x:1x1x{2 * KERNEL}"]) == 0
    assert (tmp_path / "b.onnx").exists()
