"""The fast forms of Conv's gradients and the NCHWc rewrite of training graphs (issue 10, speed).

Every form is checked against float64 finite differences, and the rewritten graph against the
graph as built: same loss, same gradients, whichever kernels ORT runs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff import build_training_graph, read_weights
from onnxprune.autodiff.gradcheck import check_gradients
from onnxprune.autodiff.nchwc import NCHWC, block_size, lower_convs
from onnxprune.autodiff.optim import FlatParams
from onnxprune.autodiff.rules import conv
from onnxprune.autodiff.runner import TrainStep
from conftest import fixture_path
from test_autodiff_rules import CONV, TOLERANCE, model, node, r

STRIDE_ONE = {"conv": CONV["conv"], "conv_dilated": CONV["conv_dilated"],
              "conv_1d_asym_pads": ([node("Conv", ["x", "w", "b"], pads=[2, 0])], {"x": r(2, 3, 9), "w": r(4, 3, 3),
                                                                                   "b": r(4)})}
GROUP_ONE = ["conv", "conv_stride_asym_pads", "conv_dilated", "conv_same_upper", "conv_same_lower",
             "conv_valid_remainder", "conv_1d", "conv_transpose", "conv_transpose_asym_pads", "conv_transpose_k2s2"]
BLOCKED = {  # channel counts that are multiples of ORT's NCHWc block (8 or 16)
    "blocked": ([node("Conv", ["x", "w", "b"], ["c1"], pads=[1, 1, 1, 1]), node("Relu", ["c1"], ["z"]),
                 node("Conv", ["z", "v"], ["c2"], strides=[2, 2], pads=[1, 0, 1, 1], dilations=[1, 2]),
                 node("Tanh", ["c2"])],
                {"x": r(2, 16, 6, 6), "w": r(16, 16, 3, 3) * 0.2, "b": r(16), "v": r(16, 16, 3, 3) * 0.2}),
    "few_input_channels": ([node("Conv", ["x", "w"], ["c"], pads=[2, 2, 2, 2], strides=[2, 2], kernel_shape=[5, 5]),
                            node("Relu", ["c"])], {"x": r(2, 3, 9, 9), "w": r(16, 3, 5, 5) * 0.2}),
}


@pytest.fixture(scope="module")
def digits_model() -> onnx.ModelProto:
    return onnx.load(str(fixture_path("digits_cnn.onnx")))


def blocked_model(case: str) -> onnx.ModelProto:
    nodes, tensors = BLOCKED[case]
    return model(nodes, tensors)


@pytest.mark.parametrize("case", GROUP_ONE)
def test_channel_first_weight_gradient(case, monkeypatch):
    monkeypatch.setattr(conv, "WEIGHT_GRAD_FORM", "channel_first")
    nodes, tensors = CONV[case]
    result = check_gradients(model(nodes, tensors), coords=8)
    assert result.worst < TOLERANCE, result.errors


@pytest.mark.parametrize("form", ["flipped", "transpose"])
@pytest.mark.parametrize("case", list(STRIDE_ONE))
def test_input_gradient_forms(case, form, monkeypatch):
    """The flipped-kernel Conv and ConvTranspose give the same input gradient."""
    monkeypatch.setattr(conv, "INPUT_GRAD_FORM", form)
    m = model(*STRIDE_ONE[case])
    tg = build_training_graph(m, loss="mse")
    ops = [n.op_type for n in tg.model.graph.node]
    assert ("ConvTranspose" in ops) == (form == "transpose")
    assert check_gradients(m, coords=8).worst < TOLERANCE


def test_flipped_form_falls_back_when_pads_exceed_the_kernel():
    """Pads wider than the dilated kernel would need negative pads in the flipped Conv."""
    m = model([node("Conv", ["x", "w"], pads=[3, 3, 3, 3])], {"x": r(2, 3, 5, 5), "w": r(4, 3, 3, 3)})
    assert "ConvTranspose" in [n.op_type for n in build_training_graph(m, loss="mse").model.graph.node]
    assert check_gradients(m, coords=8).worst < TOLERANCE


def test_block_size_is_ort_s():
    assert block_size() in (0, 4, 8, 16)


needs_nchwc = pytest.mark.skipif(block_size() <= 1, reason="this CPU/ORT build has no NCHWc kernels")


@needs_nchwc
@pytest.mark.parametrize("case", list(BLOCKED))
def test_nchwc_gradients_against_finite_differences(case):
    m = blocked_model(case)
    lowered = lower_convs(build_training_graph(m, loss="mse").model)
    assert any(n.domain == NCHWC and n.op_type == "Conv" for n in lowered.graph.node)
    result = check_gradients(m, coords=8, nchwc=True)
    assert result.worst < TOLERANCE, result.errors


def _run(m: onnx.ModelProto, feeds: dict, names: list[str]) -> list[np.ndarray]:
    import onnxruntime as ort
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(names, feeds)


@needs_nchwc
def test_nchwc_digits_training_graph_matches(digits_model):
    """The whole digits CNN's training graph: same loss and gradients with and without the rewrite,
    every Conv (forward and input gradients) rewritten, the Relus after them fused."""
    tg = build_training_graph(digits_model)
    lowered = lower_convs(tg.model, batch=64)
    kinds = [(n.domain, n.op_type) for n in lowered.graph.node]
    assert ("", "Conv") not in kinds and (NCHWC, "Conv") in kinds
    assert sum(n.op_type == "Relu" for n in lowered.graph.node) < sum(n.op_type == "Relu" for n in tg.model.graph.node)
    data = np.load(fixture_path("digits_calib.npz"))
    feeds = {"input": data["input"][:64], tg.target: data["labels"][:64].astype(np.int64),
             **read_weights(digits_model, tg.trainable)}
    names = [tg.loss, tg.logits] + [tg.grads[w] for w in tg.trainable]
    for want, got in zip(_run(tg.model, feeds, names), _run(lowered, feeds, names)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


def test_nchwc_leaves_other_convs_alone():
    """Constant weights (ORT rewrites those itself), groups, channel counts off the block, and Convs with
    too few output positions per filter element at the given batch stay ONNX Convs."""
    block = 8
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 4, 4])
    nodes = [helper.make_node("Conv", ["x", "wc"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "wg"], ["b"], group=2, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "wo"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "wi"], ["d"], pads=[1, 1, 1, 1])]
    inputs = [x] + [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in
                    [("wg", [16, 8, 3, 3]), ("wo", [12, 16, 3, 3]), ("wi", [16, 16, 3, 3])]]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "abcd"]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(r(16, 16, 3, 3), "wc")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    lowered = lower_convs(m, block=block)
    by_output = {o: n for n in lowered.graph.node for o in n.output}
    assert [by_output[o].domain for o in "abc"] == ["", "", ""]
    assert by_output["d"].op_type == "ReorderOutput"  # the run-time, group-1, blocked one
    assert lower_convs(m, batch=16, block=block) is m  # 16 x 4x4 positions: not worth reordering 2304 weights
    assert lower_convs(m, block=0) is m


def test_train_step_matches_a_plain_session(digits_model):
    """TrainStep (NCHWc rewrite, IOBinding into the flat buffers) gives the plain graph's loss and gradients."""
    tg = build_training_graph(digits_model)
    params = FlatParams(read_weights(digits_model, tg.trainable))
    data = np.load(fixture_path("digits_calib.npz"))
    x, y = np.ascontiguousarray(data["input"][:32]), data["labels"][:32].astype(np.int64)
    loss, logits = TrainStep(tg, params, threads=1)({"input": x}, y)
    names = [tg.loss, tg.logits] + [tg.grads[w] for w in params.names]
    want = _run(tg.model, {"input": x, tg.target: y, **params.values}, names)
    assert abs(loss - float(want[0])) < 1e-5 * max(1.0, abs(float(want[0])))
    np.testing.assert_allclose(logits, want[1], rtol=1e-4, atol=1e-4)
    for name, w in zip(params.names, want[2:]):
        np.testing.assert_allclose(params.grads[name], w, rtol=1e-4, atol=1e-5 * float(np.abs(w).max()))


def test_loss_trajectory_unchanged(digits_model, monkeypatch):
    """Eight AdamW steps through TrainStep (fast gradient forms, NCHWc) follow the same losses as the
    graph built with the previous forms (batch-last columns, ConvTranspose) run plainly."""
    import onnxruntime as ort
    from onnxprune.autodiff.optim import AdamW
    data = np.load(fixture_path("digits_calib.npz"))
    batches = [(np.ascontiguousarray(data["input"][i:i + 32]), data["labels"][i:i + 32].astype(np.int64))
               for i in range(0, 256, 32)]
    tg = build_training_graph(digits_model)
    params = FlatParams(read_weights(digits_model, tg.trainable))
    step, opt = TrainStep(tg, params, threads=1), AdamW(params)
    fast = []
    for x, y in batches:
        fast.append(step({"input": x}, y)[0])
        opt.step(1e-3)
    monkeypatch.setattr(conv, "WEIGHT_GRAD_FORM", "columns")
    monkeypatch.setattr(conv, "INPUT_GRAD_FORM", "transpose")
    tg = build_training_graph(digits_model)
    assert "ConvTranspose" in [n.op_type for n in tg.model.graph.node]
    sess = ort.InferenceSession(tg.model.SerializeToString(), providers=["CPUExecutionProvider"])
    params = FlatParams(read_weights(digits_model, tg.trainable))
    opt = AdamW(params)
    plain = []
    for x, y in batches:
        outs = sess.run([tg.loss] + [tg.grads[n] for n in params.names], {"input": x, tg.target: y, **params.values})
        for name, grad in zip(params.names, outs[1:]):
            params.grads[name][...] = grad
        opt.step(1e-3)
        plain.append(float(outs[0]))
    np.testing.assert_allclose(fast, plain, rtol=1e-4)
    assert fast[-1] < fast[0]


STRIDED = {"stride_2_kernel_3": ([node("Conv", ["x", "w", "b"], strides=[2, 2], pads=[1, 1, 1, 1])],
                                 {"x": r(2, 3, 7, 7), "w": r(4, 3, 3, 3), "b": r(4)}),
           "stride_2_kernel_1": ([node("Conv", ["x", "w"], strides=[2, 2])], {"x": r(2, 3, 7, 8), "w": r(4, 3, 1, 1)}),
           "stride_2_kernel_7": ([node("Conv", ["x", "w"], strides=[2, 2], pads=[3, 3, 3, 3])],
                                 {"x": r(2, 3, 10, 9), "w": r(4, 3, 7, 7)}),
           **{k: CONV[k] for k in ("conv_stride_asym_pads", "conv_same_upper", "conv_same_lower",
                                   "conv_valid_remainder")}}


@pytest.mark.parametrize("case", list(STRIDED))
def test_subpixel_input_gradient(case, monkeypatch):
    """Strided Convs: one stride-1 Conv per output phase (phases no tap reaches, as in stride 3 with
    a 2-wide kernel, are zeros), interleaved; no ConvTranspose left."""
    monkeypatch.setattr(conv, "subpixel_wins", lambda geo, dy_shape: True)  # also where ConvTranspose is faster
    m = model(*STRIDED[case])
    assert "ConvTranspose" not in [n.op_type for n in build_training_graph(m, loss="mse").model.graph.node]
    result = check_gradients(m, coords=12)
    assert result.worst < TOLERANCE, result.errors
