"""Per-rule tests on tiny hand-built graphs: coupling, a valid rewrite in ONNX Runtime, and the oracle.

Each graph puts the op between weight-bearing layers, so its slots are reached from both sides;
`assert_exact` removes random channels and requires the pruned model (checker, ORT, same output
shapes) to match the dense model with those channels zeroed.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES, oracle_gap, random_plan
from onnxprune.couple.dependency import Dependency, Group, build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.report.inspect import barrier_table
from onnxprune.couple.ops import Slot
from onnxprune.apply.rewrite import apply_plan

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def w(*shape: int, scale: float = 0.5) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def make(nodes, inputs, outputs, inits: dict[str, np.ndarray], opset: int = 17, check: bool = True) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "t", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    ir = {9: 4, 13: 7, 17: 8, 18: 8}.get(opset, 10)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def vi(name: str, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def conv(x: str, y: str, w_name: str, pads: int = 1) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w_name, w_name + "_b"], [y], pads=[pads] * 4)


def conv_inits(name: str, cout: int, cin: int, k: int = 3) -> dict[str, np.ndarray]:
    return {name: w(cout, cin, k, k), name + "_b": w(cout)}


def analyse(model: onnx.ModelProto, shapes=None) -> Dependency:
    return build_dependency(ModelGraph(model, shapes))


def group_of(dep: Dependency, slot: Slot) -> Group:
    return dep.groups[dep.channel_group[dep.elements(slot)[0]]]


def assert_exact(model: onnx.ModelProto, dep: Dependency, seeds=(0, 1, 2), fraction: float = 0.5) -> onnx.ModelProto:
    pruned = None
    for seed in seeds:
        plan = random_plan(dep, fraction, seed)
        assert plan.removed.any(), "nothing was removed"
        assert oracle_gap(model, plan) < 1e-5
        pruned = apply_plan(plan)
    return pruned


def node_of(model: onnx.ModelProto, op: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == op)


def attr(node: onnx.NodeProto, name: str):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


# ---- recurrent -----------------------------------------------------------------------------------------

def lstm_model(activations=None) -> onnx.ModelProto:
    """x -> MatMul -> Relu -> bidirectional LSTM with peepholes (zero states from a Shape chain) -> Y and Y_h heads."""
    T, I, H, O = 5, 8, 6, 4
    lstm_attrs = {"hidden_size": H, "direction": "bidirectional"}
    if activations:
        lstm_attrs["activations"] = activations
    nodes = [
        helper.make_node("MatMul", ["x", "W0"], ["a"]),
        helper.make_node("Relu", ["a"], ["a2"]),
        helper.make_node("Shape", ["a2"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "zero"], ["b1"]),
        helper.make_node("Concat", ["two", "b1", "hid"], ["shp"], axis=0),
        helper.make_node("ConstantOfShape", ["shp"], ["h0"],
                         value=numpy_helper.from_array(np.zeros(1, np.float32))),
        helper.make_node("LSTM", ["a2", "W", "R", "B", "", "h0", "h0", "P"], ["Y", "Y_h"], **lstm_attrs),
        helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["Yt", "flat3"], ["Yr"]),
        helper.make_node("MatMul", ["Yr", "Wo"], ["out"]),
        helper.make_node("Transpose", ["Y_h"], ["Ht"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["Ht", "flat2"], ["Hr"]),
        helper.make_node("MatMul", ["Hr", "Wh"], ["out2"]),
    ]
    inits = {"W0": w(6, I), "W": w(2, 4 * H, I), "R": w(2, 4 * H, H), "B": w(2, 8 * H), "P": w(2, 3 * H),
             "Wo": w(2 * H, O),
             "Wh": w(2 * H, O), "one": np.array(1, np.int64), "zero": np.array([0], np.int64),
             "two": np.array([2], np.int64), "hid": np.array([H], np.int64),
             "flat3": np.array([0, 0, -1], np.int64), "flat2": np.array([0, -1], np.int64)}
    return make(nodes, [vi("x", [T, "B", 6])], [vi("out", [T, "B", O]), vi("out2", ["B", O])], inits)


def test_lstm_couples_gates_directions_and_outputs():
    model = lstm_model()
    dep = analyse(model)
    hidden = dep.elements(Slot("R", 2))
    assert group_of(dep, Slot("R", 2)).prunable == 6
    for slot, blocks in ((Slot("W", 1), 4), (Slot("R", 1), 4), (Slot("B", 1), 8), (Slot("P", 1), 3)):
        assert (dep.elements(slot).reshape(blocks, 6) == hidden).all(), slot  # row g*H + h is unit h
    assert (dep.elements(Slot("Yr", 2)).reshape(2, 6) == hidden).all()  # [fwd | bwd] of the same unit
    assert (dep.elements(Slot("Hr", 1)).reshape(2, 6) == hidden).all()
    assert (dep.elements(Slot("h0", 2)) == hidden).all()
    # the input size: MatMul's output features are LSTM W's input columns
    assert (dep.elements(Slot("a2", 2)) == dep.elements(Slot("W", 2))).all()
    assert group_of(dep, Slot("W", 2)).prunable == 8


def test_lstm_rewrite_is_exact_and_sets_hidden_size():
    model = lstm_model()
    dep = analyse(model, {"x": (5, 2, 6)})
    pruned = assert_exact(model, dep)
    assert attr(node_of(pruned, "LSTM"), "hidden_size") == 3


def test_lstm_with_sigmoid_candidate_freezes_hidden_only():
    model = lstm_model(activations=["Sigmoid", "Sigmoid", "Tanh"] * 2)
    dep = analyse(model)
    assert group_of(dep, Slot("R", 2)).prunable == 0
    reasons = [r["reason"] for r in barrier_table(dep) if r["op"] == "LSTM"]
    assert any("Sigmoid is not 0 at 0" in r for r in reasons)
    assert group_of(dep, Slot("W", 2)).prunable == 8  # the input size is still free
    assert_exact(model, dep, seeds=(0,))


def test_lstm_layout_1_maps_batch_first_axes():
    # ORT does not run layout=1 recurrences, so this checks the coupling only
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["a"]),
             helper.make_node("LSTM", ["a", "W", "R"], ["Y"], hidden_size=3, layout=1),
             helper.make_node("Reshape", ["Y", "flat"], ["Yr"]),
             helper.make_node("MatMul", ["Yr", "Wo"], ["out"])]
    inits = {"W0": w(4, 5), "W": w(1, 12, 5), "R": w(1, 12, 3), "Wo": w(3, 2), "flat": np.array([2, 7, 3], np.int64)}
    model = make(nodes, [vi("x", [2, 7, 4])], [vi("out", [2, 7, 2])], inits)
    g = ModelGraph(model)
    assert g.shape("Y") == (2, 7, 1, 3)
    dep = build_dependency(g)
    assert (dep.elements(Slot("Y", 3)) == dep.elements(Slot("R", 2))).all()
    assert (dep.elements(Slot("a", 2)) == dep.elements(Slot("W", 2))).all()


@pytest.mark.parametrize("op,gates,extra", [("GRU", 3, {"linear_before_reset": 1}), ("GRU", 3, {}), ("RNN", 1, {})])
def test_gru_and_rnn_prune_hidden_units(op, gates, extra):
    """Forward cells with a non-zero constant initial state, read through Y_h or Y."""
    T, I, H = 4, 6, 5
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["a"]),
             helper.make_node("Tanh", ["a"], ["a2"]),
             helper.make_node(op, ["a2", "W", "R", "B", "", "h0"], ["Y", "Y_h"], hidden_size=H, **extra),
             helper.make_node("Squeeze", ["Y", "ax1"], ["Ys"]),
             helper.make_node("MatMul", ["Ys", "Wo"], ["out"]),
             helper.make_node("Squeeze", ["Y_h", "ax0"], ["Hs"]),
             helper.make_node("MatMul", ["Hs", "Wh"], ["out2"])]
    inits = {"W0": w(3, I), "W": w(1, gates * H, I), "R": w(1, gates * H, H), "B": w(1, 2 * gates * H),
             "h0": w(1, 1, H), "Wo": w(H, 2), "Wh": w(H, 2), "ax0": np.array([0], np.int64),
             "ax1": np.array([1], np.int64)}
    model = make(nodes, [vi("x", [T, 1, 3])], [vi("out", [T, 1, 2]), vi("out2", [1, 2])], inits)
    dep = analyse(model)
    hidden = dep.elements(Slot("R", 2))
    assert (dep.elements(Slot("B", 1)).reshape(2 * gates, H) == hidden).all()
    assert (dep.elements(Slot("h0", 2)) == hidden).all()
    pruned = assert_exact(model, dep)
    assert attr(node_of(pruned, op), "hidden_size") < H


def test_crnn_fixture_channel_owns_a_block_of_lstm_inputs():
    for name in ("crnn_tiny.onnx", "crnn_tiny_dynamo.onnx"):
        model = onnx.load(str(FIXTURES / name))
        dep = analyse(model)
        lstm = node_of(model, "LSTM")
        w_in = dep.elements(Slot(lstm.input[1], 2))
        channels = group_of(dep, Slot(lstm.input[1], 2)).size
        blocks = w_in.reshape(channels, -1)  # feature = c * H' + h: channel c owns a block
        assert (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0])) == channels
        assert group_of(dep, Slot(lstm.input[2], 2)).prunable == attr(lstm, "hidden_size")
        pruned = assert_exact(model, dep, seeds=(0, 1))
        assert attr(node_of(pruned, "LSTM"), "hidden_size") < attr(lstm, "hidden_size")


# ---- normalization -----------------------------------------------------------------------------------

def group_norm_model(opset: int) -> onnx.ModelProto:
    C, G = 8, 4
    nodes = [conv("x", "c", "w1"),
             helper.make_node("GroupNormalization", ["c", "s", "b"], ["n"], num_groups=G),
             helper.make_node("Relu", ["n"], ["r"]),
             conv("r", "out", "w2")]
    n = C if opset >= 21 else G  # scale and bias: per channel from opset 21, per group before
    inits = {**conv_inits("w1", C, 3), **conv_inits("w2", 5, C), "s": w(n) + 1, "b": w(n)}
    return make(nodes, [vi("x", [1, 3, 6, 6])], [vi("out", [1, 5, 6, 6])], inits, opset=opset, check=opset >= 21)


@pytest.mark.parametrize("opset", [18, 21])
def test_group_normalization_prunes_whole_groups(opset):
    model = group_norm_model(opset)
    dep = analyse(model)
    labels = dep.elements(Slot("c", 1)).reshape(4, 2)
    assert (labels == labels[:, :1]).all() and len(set(labels[:, 0])) == 4  # a group is one channel
    assert (np.repeat(dep.elements(Slot("s", 0)), 8 // len(dep.elements(Slot("s", 0)))) == labels.reshape(-1)).all()
    if opset >= 21:  # the checker calls GroupNormalization-18 deprecated, so only 21 is rewritten here
        pruned = assert_exact(model, dep)
        assert attr(node_of(pruned, "GroupNormalization"), "num_groups") == 2


def test_instance_normalization_params_follow_channels():
    nodes = [conv("x", "c", "w1"),
             helper.make_node("InstanceNormalization", ["c", "s", "b"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             conv("r", "out", "w2")]
    inits = {**conv_inits("w1", 6, 3), **conv_inits("w2", 4, 6), "s": w(6) + 1, "b": w(6)}
    model = make(nodes, [vi("x", [1, 3, 5, 5])], [vi("out", [1, 4, 5, 5])], inits)
    dep = analyse(model)
    assert (dep.elements(Slot("s", 0)) == dep.elements(Slot("c", 1))).all()
    assert_exact(model, dep)


def test_lrn_is_a_barrier_with_its_reason():
    nodes = [conv("x", "c", "w1"), helper.make_node("LRN", ["c"], ["n"], size=3), conv("n", "out", "w2")]
    model = make(nodes, [vi("x", [1, 3, 5, 5])], [vi("out", [1, 4, 5, 5])],
                 {**conv_inits("w1", 6, 3), **conv_inits("w2", 4, 6)})
    dep = analyse(model)
    assert group_of(dep, Slot("c", 1)).prunable == 0
    assert any("neighbours" in r["reason"] for r in barrier_table(dep) if r["op"] == "LRN")


# ---- element-wise corner cases ---------------------------------------------------------------------------

def test_prelu_per_channel_slopes():
    nodes = [conv("x", "c", "w1"), helper.make_node("PRelu", ["c", "slope"], ["p"]), conv("p", "out", "w2")]
    inits = {**conv_inits("w1", 6, 3), **conv_inits("w2", 4, 6), "slope": w(6, 1, 1)}
    model = make(nodes, [vi("x", [1, 3, 5, 5])], [vi("out", [1, 4, 5, 5])], inits)
    dep = analyse(model)
    assert (dep.elements(Slot("slope", 0)) == dep.elements(Slot("c", 1))).all()
    assert_exact(model, dep)


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic_ops_tie_all_inputs(op):
    nodes = [conv("x", "a", "wa"), conv("x", "b", "wb"), conv("x", "c", "wc"),
             helper.make_node(op, ["a", "b", "c"], ["s"]), conv("s", "out", "w2")]
    inits = {**conv_inits("wa", 6, 3), **conv_inits("wb", 6, 3), **conv_inits("wc", 6, 3), **conv_inits("w2", 4, 6)}
    model = make(nodes, [vi("x", [1, 3, 5, 5])], [vi("out", [1, 4, 5, 5])], inits)
    dep = analyse(model)
    labels = dep.elements(Slot("a", 1))
    assert (dep.elements(Slot("b", 1)) == labels).all() and (dep.elements(Slot("c", 1)) == labels).all()
    assert_exact(model, dep)


def test_where_ties_both_branches():
    nodes = [conv("x", "a", "wa"), conv("x", "b", "wb"), helper.make_node("Greater", ["a", "b"], ["m"]),
             helper.make_node("Where", ["m", "a", "b"], ["s"]), conv("s", "out", "w2")]
    inits = {**conv_inits("wa", 6, 3), **conv_inits("wb", 6, 3), **conv_inits("w2", 4, 6)}
    model = make(nodes, [vi("x", [1, 3, 5, 5])], [vi("out", [1, 4, 5, 5])], inits)
    dep = analyse(model)
    assert (dep.elements(Slot("m", 1)) == dep.elements(Slot("a", 1))).all()
    assert (dep.elements(Slot("b", 1)) == dep.elements(Slot("a", 1))).all()
    assert_exact(model, dep)


def test_expand_of_a_scalar_follows_the_channels():
    """A per-channel constant made by Expand: the broadcast axis carries no data, its shape entry is rewritten."""
    nodes = [conv("x", "c", "w1"), helper.make_node("Expand", ["k", "shape"], ["e"]),
             helper.make_node("Add", ["c", "e"], ["s"]), conv("s", "out", "w2")]
    inits = {**conv_inits("w1", 6, 3), **conv_inits("w2", 4, 6), "k": np.array(0.7, np.float32),
             "shape": np.array([1, 6, 1, 1], np.int64)}
    model = make(nodes, [vi("x", [1, 3, 5, 5])], [vi("out", [1, 4, 5, 5])], inits)
    dep = analyse(model)
    assert group_of(dep, Slot("c", 1)).prunable == 6
    assert_exact(model, dep)


def test_shape_computed_flatten_is_not_patched_twice():
    """TorchScript's flatten: [B, C*H*W] from Shape(x); the C*H*W entry follows the pruned C by itself."""
    nodes = [conv("x", "c", "w1"), helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["d0"], axis=0),
             helper.make_node("Gather", ["s", "i1"], ["d1"], axis=0),
             helper.make_node("Gather", ["s", "i2"], ["d2"], axis=0),
             helper.make_node("Gather", ["s", "i3"], ["d3"], axis=0),
             helper.make_node("Mul", ["d1", "d2"], ["d12"]), helper.make_node("Mul", ["d12", "d3"], ["n"]),
             helper.make_node("Unsqueeze", ["d0", "ax0"], ["d0u"]), helper.make_node("Unsqueeze", ["n", "ax0"], ["nu"]),
             helper.make_node("Concat", ["d0u", "nu"], ["shape"], axis=0),
             helper.make_node("Reshape", ["r", "shape"], ["f"]), helper.make_node("MatMul", ["f", "wf"], ["out"])]
    inits = {**conv_inits("w1", 6, 3), "wf": w(6 * 16, 3), "ax0": np.array([0], np.int64),
             **{f"i{k}": np.array(k, np.int64) for k in range(4)}}
    model = make(nodes, [vi("x", ["B", 3, 4, 4])], [vi("out", ["B", 3])], inits)
    dep = analyse(model, {"x": (2, 3, 4, 4)})
    assert group_of(dep, Slot("c", 1)).prunable == 6
    assert_exact(model, dep)


# ---- depth <-> space -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_maps_channels_to_blocks(mode):
    C = 3  # shallow channels; the deep side has 4C
    nodes = [conv("x", "d", "w1"), helper.make_node("DepthToSpace", ["d"], ["s"], blocksize=2, mode=mode),
             conv("s", "out", "w2")]
    model = make(nodes, [vi("x", [1, 3, 4, 4])], [vi("out", [1, 2, 8, 8])],
                 {**conv_inits("w1", 4 * C, 3), **conv_inits("w2", 2, C)})
    dep = analyse(model)
    shallow, deep = dep.elements(Slot("s", 1)), dep.elements(Slot("d", 1))
    expected = np.tile(shallow, 4) if mode == "DCR" else np.repeat(shallow, 4)
    assert (deep == expected).all()
    assert_exact(model, dep)


def test_space_to_depth_maps_channels_to_blocks():
    nodes = [conv("x", "c", "w1"), helper.make_node("SpaceToDepth", ["c"], ["d"], blocksize=2), conv("d", "out", "w2")]
    model = make(nodes, [vi("x", [1, 3, 4, 4])], [vi("out", [1, 2, 2, 2])],
                 {**conv_inits("w1", 3, 3), **conv_inits("w2", 2, 12)})
    dep = analyse(model)
    assert (dep.elements(Slot("d", 1)) == np.tile(dep.elements(Slot("c", 1)), 4)).all()
    assert_exact(model, dep)


def test_upsample_passes_channels():
    nodes = [conv("x", "c", "w1"), helper.make_node("Upsample", ["c", "scales"], ["u"], mode="nearest"),
             conv("u", "out", "w2")]
    inits = {**conv_inits("w1", 6, 3), **conv_inits("w2", 4, 6), "scales": np.array([1, 1, 2, 2], np.float32)}
    model = make(nodes, [vi("x", [1, 3, 4, 4])], [vi("out", [1, 4, 8, 8])], inits, opset=9)
    dep = analyse(model)
    assert (dep.elements(Slot("u", 1)) == dep.elements(Slot("c", 1))).all()
    assert_exact(model, dep)


# ---- Einsum --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("eq1,eq2", [("bti,ij->btj", "btj,jk->btk"), ("...i,ij->...j", "...j,jk->...k")])
def test_einsum_linear_layers(eq1, eq2):
    nodes = [helper.make_node("Einsum", ["x", "W1"], ["h"], equation=eq1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Einsum", ["r", "W2"], ["out"], equation=eq2)]
    model = make(nodes, [vi("x", [1, 5, 6])], [vi("out", [1, 5, 4])], {"W1": w(6, 8), "W2": w(8, 4)})
    dep = analyse(model)
    assert (dep.elements(Slot("W1", 1)) == dep.elements(Slot("W2", 0))).all()
    assert group_of(dep, Slot("W1", 1)).prunable == 8
    assert_exact(model, dep)


def test_einsum_diagonal_is_a_barrier():
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]),
             helper.make_node("Einsum", ["h", "D"], ["out"], equation="bi,ii->bi")]
    model = make(nodes, [vi("x", [2, 6])], [vi("out", [2, 8])], {"W1": w(6, 8), "D": w(8, 8)})
    dep = analyse(model)
    assert any("repeats" in r["reason"] for r in barrier_table(dep) if r["op"] == "Einsum")


# ---- quantization --------------------------------------------------------------------------------------

def qdq_model() -> onnx.ModelProto:
    """Per-channel int8 QDQ weights (zero point 0, as ORT's quantizer writes them) and per-tensor activations."""
    def qweight(name, shape):
        value = w(*shape)
        scale = (np.abs(value).reshape(shape[0], -1).max(1) / 127).astype(np.float32)
        q = np.round(value / scale.reshape(-1, *[1] * (len(shape) - 1))).astype(np.int8)
        return {name + "_q": q, name + "_s": scale, name + "_zp": np.zeros(shape[0], np.int8)}

    nodes = [helper.make_node("DequantizeLinear", ["w1_q", "w1_s", "w1_zp"], ["w1"], axis=0),
             helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "a_s", "a_zp"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "a_s", "a_zp"], ["rd"]),
             helper.make_node("DequantizeLinear", ["w2_q", "w2_s", "w2_zp"], ["w2"], axis=0),
             helper.make_node("Conv", ["rd", "w2", "b2"], ["out"], pads=[1] * 4)]
    inits = {**qweight("w1", (8, 3, 3, 3)), **qweight("w2", (4, 8, 3, 3)), "b1": w(8), "b2": w(4),
             "a_s": np.array(0.02, np.float32), "a_zp": np.array(0, np.uint8)}
    return make(nodes, [vi("x", [1, 3, 6, 6])], [vi("out", [1, 4, 6, 6])], inits, opset=13)


def test_qdq_per_channel_scales_follow_channels_and_stay_qdq():
    model = qdq_model()
    dep = analyse(model)
    conv1 = dep.elements(Slot("c", 1))
    for slot in (Slot("w1_q", 0), Slot("w1_s", 0), Slot("w1_zp", 0), Slot("b1", 0), Slot("w2_q", 1)):
        assert (dep.elements(slot) == conv1).all(), slot
    assert group_of(dep, Slot("c", 1)).prunable == 8
    pruned = assert_exact(model, dep)
    inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert inits["w1_q"].dtype == np.int8 and inits["w1_q"].shape == (4, 3, 3, 3)
    assert inits["w1_s"].shape == (4,) and inits["a_s"].shape == ()
    assert sum(n.op_type == "DequantizeLinear" for n in pruned.graph.node) == 3


def test_qdq_matmul_weights_per_output_column():
    """MatMul weights [K, N] quantized per column (axis 1), as ORT's quantizer writes them for MatMul."""
    def qcols(name, k, n):
        value = w(k, n)
        scale = (np.abs(value).max(0) / 127).astype(np.float32)
        return {name + "_q": np.round(value / scale).astype(np.int8), name + "_s": scale}

    nodes = [helper.make_node("DequantizeLinear", ["w1_q", "w1_s"], ["w1"], axis=1),
             helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("DequantizeLinear", ["w2_q", "w2_s"], ["w2"], axis=1),
             helper.make_node("MatMul", ["r", "w2"], ["out"])]
    model = make(nodes, [vi("x", [2, 6])], [vi("out", [2, 4])], {**qcols("w1", 6, 8), **qcols("w2", 8, 4)}, opset=13)
    dep = analyse(model)
    hidden = dep.elements(Slot("h", 1))
    for slot in (Slot("w1_q", 1), Slot("w1_s", 0), Slot("w2_q", 0)):
        assert (dep.elements(slot) == hidden).all(), slot
    assert_exact(model, dep)


# ---- barriers that must explain themselves --------------------------------------------------------------

def test_value_dependent_ops_are_barriers_with_reasons():
    nodes = [conv("x", "c", "w1"), conv("c", "out", "w2"), helper.make_node("NonZero", ["c"], ["nz"])]
    model = make(nodes, [vi("x", [1, 3, 4, 4])], [vi("out", [1, 4, 4, 4]), vi("nz", [4, "N"], TensorProto.INT64)],
                 {**conv_inits("w1", 6, 3), **conv_inits("w2", 4, 6)})
    dep = analyse(model)
    assert group_of(dep, Slot("c", 1)).prunable == 0
    assert any("depends on the data" in r["reason"] for r in barrier_table(dep) if r["op"] == "NonZero")
