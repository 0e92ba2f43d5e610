"""A dynamic leading input axis that is a sequence inside the model keeps the length the caller gave.

silero_vad_seq reads (frames, 576): its frames become the LSTM's time steps. The builder used to analyse
every dynamic leading axis at a probe batch of 2, so the LSTM's backward, unrolled over the analysed
length, split 2 steps out of the 4 fed at run time ("Cannot split using values in 'split' attribute").
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff.builder import _probe_shapes
from onnxprune.autodiff.gradcheck import check_gradients

RNG = np.random.default_rng(3)
STEPS, FEATURES, HIDDEN = 4, 3, 5


def _sequence_model():
    nodes = [helper.make_node("Unsqueeze", ["x", "one"], ["seq"]),  # (T, F) -> (T, 1, F): frames are time steps
             helper.make_node("LSTM", ["seq", "w", "r", "b"], ["y"], hidden_size=HIDDEN)]
    inits = {"one": np.asarray([1], np.int64), "w": 0.5 * RNG.standard_normal((1, 4 * HIDDEN, FEATURES)),
             "r": 0.5 * RNG.standard_normal((1, 4 * HIDDEN, HIDDEN)), "b": 0.5 * RNG.standard_normal((1, 8 * HIDDEN))}
    graph = helper.make_graph(nodes, "frames", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", FEATURES])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v, np.float32 if k != "one" else np.int64), k)
                               for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_given_leading_length_is_kept_and_a_unit_one_probed_at_two():
    model = _sequence_model()
    assert _probe_shapes(model, {"x": (STEPS, FEATURES)})["x"] == (STEPS, FEATURES)
    assert _probe_shapes(model, {"x": (1, FEATURES)})["x"] == (2, FEATURES)  # batch 1: probed at 2, as before
    assert _probe_shapes(model, None)["x"][0] == 2


def test_lstm_over_input_frames_matches_finite_differences():
    x = RNG.standard_normal((STEPS, FEATURES)).astype(np.float32)
    result = check_gradients(_sequence_model(), {"x": x}, loss="mse")
    assert set(result.errors) == {"w", "r", "b"}
    assert result.worst < 1e-3, result.errors
