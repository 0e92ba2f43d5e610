"""Calibration samples whose size along a dynamic axis differs from --input-shape are bad input (exit 2,
one line naming the input and both shapes), not a crash deep in the statistics pass: the analysis sizes
every tensor at --input-shape. A VAD export with a dynamic sequence axis framed by a strided Conv and a
Reshape met this (KeyError in score/stream.py)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli.main import main


def _framed_model():
    """x (1, L) -> (1, 1, L) -> Conv k=4 s=4 (8 ch) -> Relu -> Conv 1x1 (4 ch): prunable, L dynamic."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([1, 1, -1], np.int64), "to3d"),
             numpy_helper.from_array(rng.standard_normal((8, 1, 4)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((4, 8, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Reshape", ["x", "to3d"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["a"], kernel_shape=[4], strides=[4]),
             helper.make_node("Relu", ["a"], ["h"]), helper.make_node("Conv", ["h", "w2"], ["y"], kernel_shape=[1])]
    graph = helper.make_graph(nodes, "framed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "L"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "T"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def files(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_framed_model().SerializeToString())
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "long.npz", x=rng.standard_normal((8, 1, 36)).astype(np.float32))
    np.savez(tmp_path / "fits.npz", x=rng.standard_normal((8, 1, 32)).astype(np.float32))
    return path, tmp_path


def test_samples_longer_than_the_given_shape_exit_2_naming_both(files, capsys):
    path, d = files
    code = main(["prune", str(path), "-o", str(d / "out.onnx"), "--ratio", "0.5", "--calib", str(d / "long.npz"),
                 "--input-shape", "x:1x32", "--bench-rounds", "0"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1
    assert "'x'" in err[0] and "1x36" in err[0] and "1x32" in err[0]
    assert not (d / "out.onnx").exists()


def test_samples_matching_the_given_shape_still_prune(files):
    path, d = files
    code = main(["prune", str(path), "-o", str(d / "out.onnx"), "--ratio", "0.5", "--calib", str(d / "fits.npz"),
                 "--input-shape", "x:1x32", "--bench-rounds", "0", "-q"])
    assert code == 0 and (d / "out.onnx").exists()
