"""Every gradient rule against float64 central finite differences (onnx.reference).

Each case is a tiny model whose float tensors are all initializers, so they all become trainable
weights: the check covers every differentiable input of the op. Gradients come from the float32
training graph run in ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff.gradcheck import check_gradients

TOLERANCE = 1e-3
RNG = np.random.default_rng(42)


def r(*shape, low=None, high=None):
    if low is not None:
        return RNG.uniform(low, high, shape).astype(np.float32)
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values):
    return np.asarray(values, dtype=np.int64)


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


def model(nodes, tensors, opset=17):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in tensors.items()]
    graph = helper.make_graph(nodes, "case", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def unary(op, x, **attrs):
    return [node(op, ["x"], **attrs)], {"x": x}


def binary(op, a, b, **attrs):
    return [node(op, ["a", "b"], **attrs)], {"a": a, "b": b}


CONV = {
    "conv": ([node("Conv", ["x", "w", "b"], pads=[1, 1, 1, 1])], {"x": r(2, 4, 7, 7), "w": r(6, 4, 3, 3), "b": r(6)}),
    "conv_stride_asym_pads": ([node("Conv", ["x", "w", "b"], strides=[2, 3], pads=[1, 0, 2, 1])],
                              {"x": r(2, 3, 8, 9), "w": r(4, 3, 3, 2), "b": r(4)}),
    "conv_dilated": ([node("Conv", ["x", "w"], dilations=[2, 2], pads=[2, 1, 2, 1])], {"x": r(2, 3, 9, 8), "w": r(4, 3, 3, 3)}),
    "conv_grouped_strided": ([node("Conv", ["x", "w", "b"], group=2, strides=[2, 2], pads=[1, 1, 1, 1])],
                             {"x": r(2, 4, 8, 8), "w": r(6, 2, 3, 3), "b": r(6)}),
    "conv_depthwise": ([node("Conv", ["x", "w"], group=4, strides=[2, 2], pads=[1, 1, 1, 1])],
                       {"x": r(2, 4, 7, 7), "w": r(4, 1, 3, 3)}),
    "conv_same_upper": ([node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2])], {"x": r(2, 3, 8, 8), "w": r(4, 3, 3, 3)}),
    "conv_same_lower": ([node("Conv", ["x", "w"], auto_pad="SAME_LOWER", strides=[2, 2])], {"x": r(2, 3, 7, 7), "w": r(4, 3, 4, 4)}),
    "conv_valid_remainder": ([node("Conv", ["x", "w"], auto_pad="VALID", strides=[3, 3])], {"x": r(2, 2, 8, 8), "w": r(3, 2, 2, 2)}),
    "conv_1d": ([node("Conv", ["x", "w", "b"], strides=[2], pads=[1, 1])], {"x": r(2, 3, 11), "w": r(4, 3, 3), "b": r(4)}),
    "conv_transpose": ([node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])],
                       {"x": r(2, 4, 4, 5), "w": r(4, 3, 3, 3), "b": r(3)}),
    "conv_transpose_grouped_dilated": ([node("ConvTranspose", ["x", "w"], group=2, dilations=[2, 2], strides=[2, 1])],
                                       {"x": r(2, 4, 4, 4), "w": r(4, 2, 3, 3)}),
    "conv_transpose_asym_pads": ([node("ConvTranspose", ["x", "w"], strides=[2, 2], pads=[0, 1, 0, 0])],
                                 {"x": r(1, 2, 4, 5), "w": r(2, 3, 3, 3)}),
    "conv_transpose_k2s2": ([node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], kernel_shape=[2, 2])],
                            {"x": r(2, 4, 3, 3), "w": r(4, 2, 2, 2), "b": r(2)}),
}

LINEAR = {
    "gemm": ([node("Gemm", ["a", "b", "c"])], {"a": r(3, 4), "b": r(4, 5), "c": r(5)}),
    "gemm_transA_alpha_beta": ([node("Gemm", ["a", "b", "c"], transA=1, alpha=0.7, beta=1.3)],
                               {"a": r(4, 3), "b": r(4, 5), "c": r(3, 1)}),
    "gemm_transB": ([node("Gemm", ["a", "b", "c"], transB=1)], {"a": r(3, 4), "b": r(5, 4), "c": r(3, 5)}),
    "gemm_transAB": ([node("Gemm", ["a", "b"], transA=1, transB=1, alpha=2.0)], {"a": r(4, 3), "b": r(5, 4)}),
    "matmul_batched_weight": binary("MatMul", r(2, 3, 4, 5), r(5, 6)),
    "matmul_broadcast": binary("MatMul", r(3, 4, 5), r(2, 1, 5, 2)),
    "matmul_both_batched": binary("MatMul", r(2, 1, 3, 4), r(3, 4, 2)),
    "matmul_vector_left": binary("MatMul", r(4), r(2, 4, 3)),
    "matmul_vector_right": binary("MatMul", r(2, 3, 4), r(4)),
    "matmul_2d": binary("MatMul", r(3, 4), r(4, 2)),
}

NORM = {
    "batchnorm": ([node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)],
                  {"x": r(2, 3, 4, 4), "s": r(3), "b": r(3), "m": r(3), "v": r(3, low=0.5, high=2.0)}),
    "batchnorm_2d": ([node("BatchNormalization", ["x", "s", "b", "m", "v"])],
                     {"x": r(4, 5), "s": r(5), "b": r(5), "m": r(5), "v": r(5, low=0.5, high=2.0)}),
    "layernorm": ([node("LayerNormalization", ["x", "s", "b"])], {"x": r(2, 3, 8), "s": r(8), "b": r(8)}),
    "layernorm_axis1": ([node("LayerNormalization", ["x", "s", "b"], axis=1, epsilon=1e-3)],
                        {"x": r(2, 3, 5), "s": r(3, 5), "b": r(5)}),
    "layernorm_decomposed": ([
        node("ReduceMean", ["x"], ["mu"], axes=[-1]), node("Sub", ["x", "mu"], ["d"]),
        node("Pow", ["d", "two"], ["sq"]), node("ReduceMean", ["sq"], ["var"], axes=[-1]),
        node("Add", ["var", "eps"], ["ve"]), node("Sqrt", ["ve"], ["sd"]), node("Div", ["d", "sd"], ["n"]),
        node("Mul", ["n", "s"], ["ns"]), node("Add", ["ns", "b"]),
    ], {"x": r(2, 3, 6), "two": np.float32(2.0), "eps": np.float32(1e-5), "s": r(6), "b": r(6)}),
}

ACTIVATION = {
    "relu": unary("Relu", r(3, 4)),
    "leaky_relu": unary("LeakyRelu", r(3, 4), alpha=0.1),
    "prelu": ([node("PRelu", ["x", "s"])], {"x": r(2, 3, 4), "s": r(3, 1)}),
    "sigmoid": unary("Sigmoid", r(3, 4)),
    "tanh": unary("Tanh", r(3, 4)),
    "hard_sigmoid": unary("HardSigmoid", r(4, 5, low=-4, high=4), alpha=0.25, beta=0.4),
    "hard_swish": unary("HardSwish", r(4, 5, low=-5, high=5)),
    "clip": ([node("Clip", ["x", "lo", "hi"])], {"x": r(4, 5, low=-2, high=2), "lo": np.float32(-0.5), "hi": np.float32(0.8)}),
    "clip_max_only": ([node("Clip", ["x", "", "hi"])], {"x": r(4, 5), "hi": np.float32(0.3)}),
    "erf": unary("Erf", r(3, 4)),
    "softplus": unary("Softplus", r(3, 4)),
    "atan": unary("Atan", r(3, 4, low=-3, high=3)),
    "softsign": unary("Softsign", r(3, 4)),
    "elu": unary("Elu", r(3, 4), alpha=0.7),
    "exp": unary("Exp", r(3, 4)),
    "log": unary("Log", r(3, 4, low=0.5, high=2.0)),
    "neg": unary("Neg", r(3, 4)),
    "abs": unary("Abs", r(3, 4)),
    "reciprocal": unary("Reciprocal", r(3, 4, low=0.5, high=2.0)),
    "sqrt": unary("Sqrt", r(3, 4, low=0.5, high=2.0)),
    "softmax": unary("Softmax", r(2, 3, 4), axis=1),
    "log_softmax": unary("LogSoftmax", r(2, 5)),
}

ELEMENTWISE = {
    "add_broadcast": binary("Add", r(2, 3, 4), r(3, 1)),
    "sub_broadcast": binary("Sub", r(2, 1, 4), r(3, 4)),
    "mul_broadcast": binary("Mul", r(2, 3, 4), r(4)),
    "div_broadcast": binary("Div", r(2, 3, 4), r(1, 3, 1, low=0.5, high=2.0)),
    "pow": binary("Pow", r(2, 3, low=0.5, high=2.0), r(3)),
    "pow_const_exponent": ([node("Pow", ["x", "p"])], {"x": r(2, 3, low=0.5, high=2.0), "p": np.float32(1.7)}),
    "sum3": ([node("Sum", ["a", "b", "c"])], {"a": r(2, 3), "b": r(3), "c": r(2, 1)}),
    "where": ([node("Where", ["m", "a", "b"])], {"m": RNG.random((2, 3)) > 0.5, "a": r(2, 3), "b": r(3)}),
    "max_broadcast": ([node("Max", ["a", "b", "c"])], {"a": r(2, 3), "b": r(3), "c": np.float32(0.1)}),
    "min_broadcast": binary("Min", r(2, 3, 4), r(3, 1)),
    "shared_input": ([node("Mul", ["x", "x"], ["sq"]), node("Add", ["sq", "x"])], {"x": r(3, 4)}),
}

POOL = {
    "maxpool": unary("MaxPool", r(2, 3, 6, 6), kernel_shape=[2, 2], strides=[2, 2]),
    "maxpool_crop_remainder": unary("MaxPool", r(2, 2, 7, 7), kernel_shape=[2, 2], strides=[2, 2]),
    "maxpool_1d": unary("MaxPool", r(2, 3, 9), kernel_shape=[3], strides=[3]),
    "maxpool_overlap_pad": unary("MaxPool", r(2, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "maxpool_dilated": unary("MaxPool", r(1, 2, 7, 7), kernel_shape=[2, 2], dilations=[2, 2]),
    "maxpool_ceil": unary("MaxPool", r(1, 2, 7, 7), kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    "avgpool": unary("AveragePool", r(2, 3, 6, 6), kernel_shape=[2, 2], strides=[2, 2]),
    "avgpool_pad_exclude": unary("AveragePool", r(1, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "avgpool_pad_include": unary("AveragePool", r(1, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                 count_include_pad=1),
    "avgpool_ceil": unary("AveragePool", r(1, 2, 7, 7), kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    "global_avgpool": unary("GlobalAveragePool", r(2, 3, 4, 5)),
    "global_maxpool": unary("GlobalMaxPool", r(2, 3, 4, 5)),
}

SELECT = {
    "concat": ([node("Concat", ["a", "b"], axis=1)], {"a": r(2, 3, 4), "b": r(2, 2, 4)}),
    "concat_axis0": ([node("Concat", ["a", "b"], axis=0)], {"a": r(2, 3), "b": r(1, 3)}),
    "split_unused_output": ([node("Split", ["x", "sizes"], ["p", "q", "s"], axis=1), node("Add", ["p", "s"])],
                            {"x": r(2, 7, 3), "sizes": i64(3, 1, 3)}),
    "slice": ([node("Slice", ["x", "st", "en", "ax"])], {"x": r(3, 6, 5), "st": i64(1, -4), "en": i64(5, 100), "ax": i64(1, 2)}),
    "slice_strided_reversed": ([node("Slice", ["x", "st", "en", "ax", "sp"])],
                               {"x": r(2, 7, 6), "st": i64(0, 5), "en": i64(7, 0), "ax": i64(1, 2), "sp": i64(2, -2)}),
    "gather_repeated_negative": ([node("Gather", ["x", "idx"], axis=1)], {"x": r(2, 5, 3), "idx": i64(0, -1, 0, 3)}),
    "gather_scalar": ([node("Gather", ["x", "idx"], axis=1)], {"x": r(2, 5, 3), "idx": np.int64(2)}),
    "gather_2d_indices": ([node("Gather", ["x", "idx"])], {"x": r(6, 3), "idx": np.array([[0, 5], [2, 2]], np.int64)}),
    "pad": ([node("Pad", ["x", "p"])], {"x": r(2, 3, 4), "p": i64(0, 1, 2, 0, 0, 1)}),
    "pad_value": ([node("Pad", ["x", "p", "v"])], {"x": r(2, 3), "p": i64(1, 0, 0, 2), "v": np.float32(0.5)}),
}

SHAPE = {
    "reshape": ([node("Reshape", ["x", "s"])], {"x": r(2, 3, 4), "s": i64(4, -1)}),
    "flatten": unary("Flatten", r(2, 3, 4), axis=2),
    "transpose": unary("Transpose", r(2, 3, 4), perm=[2, 0, 1]),
    "squeeze": ([node("Squeeze", ["x", "a"])], {"x": r(2, 1, 4), "a": i64(1)}),
    "unsqueeze": ([node("Unsqueeze", ["x", "a"])], {"x": r(2, 4), "a": i64(0, 2)}),
    "expand": ([node("Expand", ["x", "s"])], {"x": r(3, 1), "s": i64(2, 3, 4)}),
    "identity_dropout": ([node("Identity", ["x"], ["a"]), node("Dropout", ["a"])], {"x": r(3, 4)}),
    "cast_roundtrip": ([node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE), node("Mul", ["d", "d"], ["e"]),
                        node("Cast", ["e"], to=TensorProto.FLOAT)], {"x": r(3, 4)}),
}

REDUCE = {
    "reduce_mean": ([node("ReduceMean", ["x"], axes=[1], keepdims=0)], {"x": r(2, 3, 4)}),
    "reduce_mean_all": unary("ReduceMean", r(2, 3, 4)),
    "reduce_sum": ([node("ReduceSum", ["x", "a"], keepdims=1)], {"x": r(2, 3, 4), "a": i64(0, 2)}),
    "reduce_sum_keepdims0": ([node("ReduceSum", ["x", "a"], keepdims=0)], {"x": r(2, 3, 4), "a": i64(-1)}),
    "reduce_max": ([node("ReduceMax", ["x"], axes=[2], keepdims=1)], {"x": r(2, 3, 4)}),
    "reduce_sum_square": ([node("ReduceSumSquare", ["x"], axes=[1], keepdims=0)], {"x": r(2, 3, 4)}),
}

RESIZE = {
    "resize_nearest_x2": ([node("Resize", ["x", "", "sc"], mode="nearest")],
                          {"x": r(1, 2, 3, 4), "sc": np.array([1, 1, 2, 2], np.float32)}),
    "resize_linear_sizes": ([node("Resize", ["x", "", "", "sz"], mode="linear")],
                            {"x": r(2, 2, 4, 3), "sz": i64(2, 2, 7, 5)}),
    "resize_linear_align_corners": ([node("Resize", ["x", "", "", "sz"], mode="linear",
                                          coordinate_transformation_mode="align_corners")],
                                    {"x": r(1, 2, 3, 3), "sz": i64(1, 2, 7, 6)}),
    "resize_cubic_down": ([node("Resize", ["x", "", "sc"], mode="cubic")],
                          {"x": r(1, 1, 8, 6), "sc": np.array([1, 1, 0.5, 0.5], np.float32)}),
    "resize_nearest_3d_input": ([node("Resize", ["x", "", "", "sz"], mode="nearest", nearest_mode="floor")],
                                {"x": r(2, 3, 5), "sz": i64(2, 3, 9)}),
}

T, N, I, H = 4, 2, 3, 5  # recurrent cases: steps, batch, input size, hidden size


def recurrent(op, gates, direction="forward", outputs=("y",), states=True, bias=True, **attrs):
    """An LSTM/GRU/RNN node with every weight, bias and initial state an initializer."""
    dirs = 2 if direction == "bidirectional" else 1
    tensors = {"x": r(T, N, I), "w": 0.5 * r(dirs, gates * H, I), "r": 0.5 * r(dirs, gates * H, H)}
    if bias:
        tensors["b"] = 0.5 * r(dirs, 2 * gates * H)
    if states:
        tensors["h0"] = r(dirs, N, H)
        if op == "LSTM":
            tensors["c0"] = r(dirs, N, H)
    names = ["x", "w", "r", "b" if bias else "", ""] + (["h0"] + (["c0"] if op == "LSTM" else []) if states else [])
    return [node(op, names, list(outputs), hidden_size=H, direction=direction, **attrs)], tensors


CELLS = {"lstm": ("LSTM", 4, {}), "gru": ("GRU", 3, {}), "gru_lbr": ("GRU", 3, {"linear_before_reset": 1}),
         "rnn": ("RNN", 1, {})}
RECURRENT = {f"{name}_{direction}": recurrent(op, gates, direction, **attrs)
             for name, (op, gates, attrs) in CELLS.items() for direction in ("forward", "reverse", "bidirectional")}
for name, (op, gates, attrs) in CELLS.items():
    # Y and Y_h both used, no initial state, no bias
    nodes, tensors = recurrent(op, gates, "bidirectional", ("a", "hh"), states=False, bias=False, **attrs)
    RECURRENT[f"{name}_y_and_yh_no_state"] = (nodes + [node("Add", ["a", "hh"])], tensors)
    RECURRENT[f"{name}_yh_only"] = recurrent(op, gates, "reverse", ("", "y"), **attrs)
RECURRENT["lstm_yc_only"] = recurrent("LSTM", 4, "bidirectional", ("", "", "y"))
RECURRENT["rnn_relu"] = recurrent("RNN", 1, "bidirectional", activations=["Relu", "Relu"])
RECURRENT["rnn_sigmoid"] = recurrent("RNN", 1, "reverse", activations=["Sigmoid"])

NORM.update({
    "instancenorm": ([node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-3)],
                     {"x": r(2, 3, 4, 5), "s": r(3), "b": r(3)}),
    "instancenorm_1d": ([node("InstanceNormalization", ["x", "s", "b"])], {"x": r(2, 3, 6), "s": r(3), "b": r(3)}),
})
EINSUM = {
    "einsum_attention": ([node("Einsum", ["a", "b"], equation="bhid,bhjd->bhij")], {"a": r(2, 2, 3, 4), "b": r(2, 2, 5, 4)}),
    "einsum_index_summed_away": ([node("Einsum", ["a", "b"], equation="ik,kj->i")], {"a": r(3, 4), "b": r(4, 5)}),
    "einsum_implicit_three": ([node("Einsum", ["a", "b", "c"], equation="ij,jk,kl")],
                              {"a": r(2, 3), "b": r(3, 4), "c": r(4, 2)}),
    "einsum_ellipsis": ([node("Einsum", ["a", "b"], equation="...ij,...jk->...ik")], {"a": r(2, 3, 4), "b": r(2, 4, 5)}),
    "einsum_unary": ([node("Einsum", ["a"], equation="ijk->ki")], {"a": r(2, 3, 4)}),
}
SHAPE.update({
    "tile": ([node("Tile", ["x", "rp"])], {"x": r(2, 3, 4), "rp": i64(1, 2, 3)}),
    "tile_batch_axis": ([node("Tile", ["x", "rp"])], {"x": r(2, 3), "rp": i64(3, 1)}),
})

ALL = {**CONV, **LINEAR, **NORM, **ACTIVATION, **ELEMENTWISE, **POOL, **SELECT, **SHAPE, **REDUCE, **RESIZE,
       **RECURRENT, **EINSUM}


@pytest.mark.parametrize("case", sorted(ALL))
def test_rule_matches_finite_differences(case):
    nodes, tensors = ALL[case]
    result = check_gradients(model(nodes, tensors), coords=12)
    assert result.errors, "no weight was trained"
    assert result.worst < TOLERANCE, f"{case}: {result.errors}"


@pytest.mark.parametrize("op,attrs", [("Gelu", {}), ("Gelu", {"approximate": "tanh"})])
def test_gelu_opset20(op, attrs):
    nodes, tensors = unary(op, r(3, 5), **attrs)
    assert check_gradients(model(nodes, tensors, opset=20)).worst < TOLERANCE


@pytest.mark.parametrize("opset,groups,weights", [(18, 2, 2), (21, 2, 4)])
def test_group_norm(opset, groups, weights):
    """Scale and bias per group before opset 21, per channel from it."""
    nodes = [node("GroupNormalization", ["x", "s", "b"], num_groups=groups)]
    result = check_gradients(model(nodes, {"x": r(2, 4, 3, 3), "s": r(weights), "b": r(weights)}, opset=opset))
    assert set(result.errors) == {"x", "s", "b"} and result.worst < TOLERANCE, result.errors


@pytest.mark.parametrize("case", ["antialias", "axes", "cubic_asymmetric", "nearest_ceil_pytorch_half_pixel"])
def test_resize_modes(case):
    """Every mode goes through the same basis matrices read off ONNX Runtime; antialias and axes need opset 18."""
    nodes, tensors, opset = {
        "antialias": ([node("Resize", ["x", "", "sc"], mode="linear", antialias=1)],
                      {"x": r(1, 2, 8, 6), "sc": np.array([1, 1, 0.5, 0.5], np.float32)}, 18),
        "axes": ([node("Resize", ["x", "", "", "sz"], mode="nearest", axes=[3])], {"x": r(1, 2, 3, 4), "sz": i64(9)}, 18),
        "cubic_asymmetric": ([node("Resize", ["x", "", "sc"], mode="cubic", coordinate_transformation_mode="asymmetric",
                                   cubic_coeff_a=-0.5)], {"x": r(1, 1, 4, 5), "sc": np.array([1, 1, 2, 1.5], np.float32)}, 17),
        "nearest_ceil_pytorch_half_pixel": ([node("Resize", ["x", "", "sc"], mode="nearest", nearest_mode="ceil",
                                                  coordinate_transformation_mode="pytorch_half_pixel")],
                                            {"x": r(1, 1, 4, 5), "sc": np.array([1, 1, 1.5, 2], np.float32)}, 17),
    }[case]
    assert check_gradients(model(nodes, tensors, opset=opset), coords=8).worst < TOLERANCE


def test_reduce_axes_as_inputs_at_opset18():
    nodes = [node("ReduceMean", ["x", "a"], ["m"], keepdims=0), node("Mul", ["m", "m"])]
    assert check_gradients(model(nodes, {"x": r(2, 3, 4), "a": i64(1)}, opset=18)).worst < TOLERANCE


def test_conv_weight_gradient_without_columns(monkeypatch):
    """The swapped-tensor Conv form used for large inputs (above the im2col limit)."""
    from onnxprune.autodiff.rules import conv
    monkeypatch.setattr(conv, "IM2COL_LIMIT", 0)
    for case in ("conv_grouped_strided", "conv_dilated", "conv_stride_asym_pads", "conv_transpose_grouped_dilated"):
        nodes, tensors = CONV[case]
        result = check_gradients(model(nodes, tensors), coords=8)
        assert result.worst < TOLERANCE, f"{case}: {result.errors}"


@pytest.mark.parametrize("loss,options", [("cross_entropy", {}), ("cross_entropy", {"label_smoothing": 0.1}),
                                          ("mse", {}), ("distill", {"temperature": 3.0}),
                                          ("distill", {"distill": "mse"})])
def test_loss_heads(loss, options):
    nodes, tensors = [node("MatMul", ["x", "w"])], {"x": r(5, 4), "w": r(4, 3)}
    assert check_gradients(model(nodes, tensors), loss=loss, **options).worst < TOLERANCE


def test_sequence_logits_cross_entropy():
    """Logits of shape (batch, time, classes) with labels (batch, time)."""
    nodes, tensors = [node("MatMul", ["x", "w"])], {"x": r(2, 3, 4), "w": r(4, 5)}
    assert check_gradients(model(nodes, tensors), loss="cross_entropy").worst < TOLERANCE


def test_conv_transpose_output_shape_matches_explicit_pads():
    """onnx.reference cannot run output_shape; ORT applies pads (total - total//2, total//2) for it,
    so its gradients must equal those of the explicit-pads twin checked above."""
    import onnxruntime as ort

    from onnxprune.autodiff import build_training_graph
    tensors = {"x": r(1, 2, 4, 5), "w": r(2, 3, 3, 3)}
    target = r(1, 3, 9, 10)
    grads = []
    for attrs in ({"output_shape": [9, 10]}, {"pads": [0, 1, 0, 0]}):
        tg = build_training_graph(model([node("ConvTranspose", ["x", "w"], strides=[2, 2], **attrs)], tensors), loss="mse")
        sess = ort.InferenceSession(tg.model.SerializeToString(), providers=["CPUExecutionProvider"])
        grads.append(sess.run([tg.grads["x"], tg.grads["w"]], {**tensors, tg.target: target}))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_negative_pad_gradient_is_zero_filled():
    """onnx.reference cannot run negative pads (crops); check against the closed form instead."""
    import onnxruntime as ort

    from onnxprune.autodiff import build_training_graph
    x = r(2, 3, 4)
    pads = [0, 1, -1, 0, -1, 1]
    tg = build_training_graph(model([node("Pad", ["x", "p"])], {"x": x, "p": np.asarray(pads, np.int64)}), loss="mse")
    sess = ort.InferenceSession(tg.model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run([tg.logits], {"x": x, tg.target: np.zeros((2, 3, 4), np.float32)})[0]
    target = r(*y.shape)
    (grad,) = sess.run([tg.grads["x"]], {"x": x, tg.target: target})
    dy = 2 * (y - target) / y.size
    expected = np.zeros_like(x)
    expected[:, :2, 1:] = dy[:, 1:, :3]  # axis 1: one row added in front, the last cropped; axis 2 the reverse
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_maxpool_ties_share_the_gradient():
    """A window of equal values passes dY on in equal shares (a subgradient), never k times over."""
    import onnxruntime as ort

    from onnxprune.autodiff import build_training_graph
    x = r(1, 1, 4, 4)
    x[0, 0, :2, :2] = 1.5  # one window, all four tied
    tg = build_training_graph(model(*unary("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2])), loss="mse")
    sess = ort.InferenceSession(tg.model.SerializeToString(), providers=["CPUExecutionProvider"])
    target = r(1, 1, 2, 2)
    y, grad = sess.run([tg.logits, tg.grads["x"]], {"x": x, tg.target: target})
    dy = 2 * (y - target) / y.size
    np.testing.assert_allclose(grad[0, 0, :2, :2], np.full((2, 2), dy[0, 0, 0, 0] / 4), rtol=1e-6)
    np.testing.assert_allclose(grad.reshape(2, 2, 2, 2).sum(axis=(1, 3)), dy[0, 0], rtol=1e-5)


def test_gather_gradient_runs_at_a_batch_other_than_the_analysed_one():
    """An unrolled recurrent export reads time step t of a time-major (T, N, C) tensor with Gather on
    axis 0: the batch N sits after the gathered axis. Training graphs are analysed at a probe batch of 2
    and run at any batch, so the rule must not write the analysed N into its shapes (captcha_crnn's
    fisher scoring failed in ONNX Runtime on exactly this and fell back)."""
    import onnxruntime as ort

    from onnxprune.autodiff.builder import build_training_graph
    from onnxprune.autodiff.weights import read_weights

    steps, width, out = 5, 4, 3
    nodes = [node("Mul", ["x", "a"], ["s"]), node("Transpose", ["s"], ["t"], perm=[2, 0, 1]),
             node("Gather", ["t", "step"], ["g"], axis=0), node("MatMul", ["g", "w"])]
    graph = helper.make_graph(nodes, "unrolled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width, steps])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out])],
                              [numpy_helper.from_array(r(1, width, 1), "a"), numpy_helper.from_array(r(width, out), "w"),
                               numpy_helper.from_array(np.int64(3), "step")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    probed = build_training_graph(m, loss="mse")  # analysed at the probe batch
    assert "a" in probed.trainable  # the Gather's backward is on a weight's path
    for batch in (1, 3):
        x, target = r(batch, width, steps), r(batch, out)
        fed = build_training_graph(m, loss="mse", input_shapes={"x": x.shape})  # analysed at this batch
        got = [ort.InferenceSession(tg.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            [tg.grads["a"]], {"x": x, tg.target: target, **read_weights(m, tg.trainable)})[0] for tg in (probed, fed)]
        np.testing.assert_allclose(got[0], got[1], rtol=1e-5, atol=1e-7)
        assert np.abs(got[0]).sum() > 0
