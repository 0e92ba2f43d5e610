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
