"""Calibration sources agree, and streaming statistics equal the statistics of all data at once."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune.score.calibration import collect_statistics, load_calibration
from onnxprune.load.data import load_npz
from onnxprune.errors import BadInputError

RANKS = {"input": 4}


def test_sources_agree(tmp_path):
    reference = load_npz(FIXTURES / "digits_calib.npz", RANKS)
    x = reference.inputs["input"][:, 0]  # (N, 1, 8, 8): samples along the batch axis
    feeds = [{"input": x[i:i + 10]} for i in range(0, 40, 10)]

    class Reader:  # ONNX Runtime's CalibrationDataReader protocol
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(40):
        np.save(folder / f"{i:03d}.npy", x[i:i + 1])
    for source in (feeds, Reader(), folder):
        data = load_calibration(source, RANKS)
        assert len(data) == 40
        np.testing.assert_array_equal(data.inputs["input"], reference.inputs["input"][:40])


def test_image_folder(tmp_path):
    from PIL import Image
    from onnxprune.score.calibration import ImageOptions
    for i in range(3):
        Image.fromarray(np.full((10, 12, 3), 50 * i, np.uint8)).save(tmp_path / f"{i}.png")
    data = load_calibration(tmp_path, {"x": 4}, ImageOptions(resize=(8, 6), mean=(0.5,), std=(0.5,)))
    arr = data.inputs["x"]
    assert arr.shape == (3, 1, 3, 8, 6)
    np.testing.assert_allclose(arr[1].max(), (50 / 255 - 0.5) / 0.5, rtol=1e-5)


def test_bad_sources():
    with pytest.raises(BadInputError):
        load_calibration([{"wrong": np.zeros((1, 1, 8, 8))}], RANKS)
    with pytest.raises(BadInputError):
        load_calibration([{"input": np.zeros((8, 8))}], RANKS)
    with pytest.raises(BadInputError):
        load_calibration(42, RANKS)


def test_streaming_statistics_match_full_pass():
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    data = load_npz(FIXTURES / "digits_calib.npz", RANKS).take(70)
    conv_out = next(n.output[0] for n in model.graph.node if n.op_type == "Conv")
    stats = collect_statistics(model, data, {(conv_out, 1): True}, batch_size=16)
    st = stats.get(conv_out, 1)
    # the same tensor computed in one go
    from onnxprune.load.runtime import session
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.add().name = conv_out
    full = session(probe).run([conv_out], {"input": np.concatenate(list(data.inputs["input"]))})[0]
    rows = np.moveaxis(full, 1, -1).reshape(-1, full.shape[1]).astype(np.float64)
    assert st.count == rows.shape[0]
    np.testing.assert_allclose(st.mean, rows.mean(0), rtol=1e-6, atol=1e-9)
    gram = rows.T @ rows / len(rows)  # Grams are float32 products summed in float64: float32 rounding of the scale
    np.testing.assert_allclose(st.gram / st.count, gram, rtol=1e-5, atol=1e-6 * np.abs(gram).max())
    np.testing.assert_allclose(st.apoz, (rows == 0).mean(0))
    np.testing.assert_allclose(st.mean_abs, np.abs(rows).mean(0), rtol=1e-5)  # float32 block sums


def test_feeds_whose_leading_axes_differ_are_one_sample_each():
    """A sequence model fed (frames, F) beside a (1, 1, H) state: the leading axes are no shared batch
    axis, so each feed is one sample (before, the frames were split into samples and the state was not,
    and the columns disagreed in length)."""
    ranks = {"frames": 2, "state": 3}
    feeds = [{"frames": np.full((4, 6), i, np.float32), "state": np.full((1, 1, 3), i, np.float32)} for i in range(5)]
    data = load_calibration(feeds, ranks)
    assert len(data) == 5
    assert data.inputs["frames"].shape == (5, 4, 6) and data.inputs["state"].shape == (5, 1, 1, 3)
    assert data.batch(2, 3)["frames"][0, 0] == 2 and data.batch(2, 3)["state"].shape == (1, 1, 3)
    batched = load_calibration([{"frames": np.zeros((4, 6), np.float32), "state": np.zeros((4, 1, 3), np.float32)}],
                               ranks)
    assert len(batched) == 4 and batched.inputs["frames"].shape == (4, 1, 6)  # a shared batch axis: split


def test_prune_with_sequence_feeds():
    """End to end: a model whose first input axis is a sequence of frames beside a fixed-size state prunes
    with such feeds and its outputs keep their shape."""
    import onnxprune
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["frames", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["m"]), helper.make_node("Reshape", ["state", "shape"], ["s"]),
             helper.make_node("Add", ["m", "s"], ["y"])]
    inits.append(numpy_helper.from_array(np.array([1, 3], np.int64), "shape"))
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["T", 6]),
                                             helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"frames": rng.standard_normal((4, 6)).astype(np.float32),
              "state": rng.standard_normal((1, 1, 3)).astype(np.float32)} for _ in range(8)]
    result = onnxprune.prune(model, calib=feeds, ratio=0.5, bench_rounds=0)
    pruned = result.model
    w1 = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}["w1"]
    assert w1.shape == (6, 8)
    import onnxruntime as ort
    out = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds[0])[0]
    assert out.shape == (4, 3)
