"""Segment-at-a-time streaming (score/stream.py): the same values as one run of the whole model, every node
run once, frontier tensors spilled to disk past the budget, constants never stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.load.data import Dataset, load_npz
from onnxprune.load.runtime import session
from onnxprune.score.stream import ActivationStore, Streamer, level_segments, needed_nodes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _one_pass(model: onnx.ModelProto, tensors: list[str], feed: dict) -> dict[str, np.ndarray]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for t in tensors:
        probe.graph.output.add().name = t
    return dict(zip(tensors, session(probe).run(tensors, feed)))


def test_node_by_node_segments_spilled_to_disk_match_one_run():
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    data = load_npz(FIXTURES / "digits_calib.npz", {"input": 4}).take(12)
    order = needed_nodes(model, [model.graph.output[0].name])
    segments = [[i] for i in order]  # the finest cut: every tensor between two nodes is a frontier tensor
    fetches = [[t for t in model.graph.node[i].output] for i in order]
    store = ActivationStore(budget=0)  # everything goes to disk
    streamer = Streamer(model, segments, fetches, data, batch_size=5, store=store)
    got: dict[str, list[np.ndarray]] = {}
    spilled = 0
    for _ in segments:
        for b, share, values in streamer.run():
            for t, v in values.items():
                got.setdefault(t, []).append(v)
        spilled = max(spilled, len(store._files))
    streamer.close()
    assert spilled > 0 and not store._files and store._folder is None  # used, then cleaned up
    tensors = [t for f in fetches for t in f]
    full = _one_pass(model, tensors, {"input": np.concatenate(list(data.inputs["input"]))})
    for t in tensors:
        np.testing.assert_allclose(np.concatenate(got[t]), full[t], rtol=1e-5, atol=1e-5 * np.abs(full[t]).max())


def _constant_weights_model() -> onnx.ModelProto:
    """x -> Conv (weight from a Constant node) -> Relu -> Conv (Constant) -> Reshape to the input's own shape."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((2, 4, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(w1)),
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(w2)),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Reshape", ["c2", "shape"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 6])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_levels_constants_and_replaced_weights():
    model = _constant_weights_model()
    x = np.random.default_rng(1).standard_normal((6, 1, 2, 6, 6)).astype(np.float32)
    data = Dataset({"x": x})
    segments = level_segments(model, {"c1", "c2"}, {"r1", "y"}, 3)
    streamer = Streamer(model, segments, [[], ["r1"], ["y"]], data, batch_size=4)
    names = [[model.graph.node[i].output[0] for i in seg] for seg in streamer.segments]
    assert names == [["shape"], ["c1", "r1"], ["c2", "y"]]  # Constant nodes go with their readers
    list(streamer.run())
    r1 = np.concatenate([v["r1"] for _, _, v in streamer.run()])
    assert not any(k[0] in ("w1", "w2") for k in streamer.store._memory)  # constants are never stored
    w2 = np.full((2, 4, 1, 1), 0.5, np.float32)
    y = np.concatenate([v["y"] for _, _, v in streamer.run({"w2": w2})])  # a re-solved weight swapped in
    streamer.close()
    full = _one_pass(model, ["r1"], {"x": x.reshape(6, 2, 6, 6)})["r1"]
    np.testing.assert_allclose(r1, full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, np.einsum("oc,nchw->nohw", w2[:, :, 0, 0], full), rtol=1e-5, atol=1e-5)
