"""Gradient rules of ONNX Runtime's fused transformer ops (com.microsoft Attention, SkipLayerNormalization,
BiasGelu, FastGelu, SkipSimplifiedLayerNormalization, EmbedLayerNormalization; SimplifiedLayerNormalization) against
float64 finite differences; the float64 forward comes from numpy definitions of the ops (autodiff/reference_ops.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff import build_training_graph
from onnxprune.autodiff.gradcheck import check_gradients

TOLERANCE = 1e-3
RNG = np.random.default_rng(7)
B, S, D = 2, 3, 8


def r(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def ms(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), domain="com.microsoft", **attrs)


def model(nodes, tensors):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in tensors.items()]
    graph = helper.make_graph(nodes, "case", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def attention_case():
    return {"x": r(B, S, D), "w": 0.5 * r(D, 3 * D), "b": r(3 * D)}


EMBED = {"ids": np.array([[1, 3, 1], [0, 5, 2]], np.int32), "seg": np.array([[0, 0, 1], [0, 1, 1]], np.int32),
         "word": r(6, D), "pos": r(5, D), "segt": r(2, D), "g": r(D), "be": r(D)}
CASES = {
    "fast_gelu": ([ms("FastGelu", ["x", "b"])], {"x": r(2, 3, 4), "b": r(4)}),
    "fast_gelu_no_bias": ([ms("FastGelu", ["x"])], {"x": r(2, 3, 4)}),
    "bias_gelu": ([ms("BiasGelu", ["x", "b"])], {"x": r(2, 3, 4), "b": r(4)}),
    "skip_layer_norm": ([ms("SkipLayerNormalization", ["x", "s", "g", "be", "bi"], epsilon=1e-5)],
                        {"x": r(B, S, D), "s": r(B, S, D), "g": r(D), "be": r(D), "bi": r(D)}),
    "skip_layer_norm_sum_output": ([ms("SkipLayerNormalization", ["x", "s", "g", "be"], ["o", "", "", "sum"]),
                                    helper.make_node("Mul", ["o", "sum"], ["y"])],
                                   {"x": r(B, S, D), "s": r(B, S, D), "g": r(D), "be": r(D)}),
    "skip_simplified_layer_norm": ([ms("SkipSimplifiedLayerNormalization", ["x", "s", "g", "bi"], ["o", "", "", "sum"]),
                                    helper.make_node("Add", ["o", "sum"], ["y"])],
                                   {"x": r(B, S, D), "s": r(B, S, D), "g": r(D), "bi": r(D)}),
    "simplified_layer_norm": ([helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y"], epsilon=1e-5)],
                              {"x": r(B, S, D), "g": r(D)}),
    "embed_layer_norm": ([ms("EmbedLayerNormalization", ["ids", "seg", "word", "pos", "segt", "g", "be", "m"],
                             ["y", "mask_index"], epsilon=1e-5)], {**EMBED, "m": np.array([[1, 1, 0], [1, 1, 1]], np.int32)}),
    "embed_layer_norm_sum_position_ids": ([ms("EmbedLayerNormalization", ["ids", "", "word", "pos", "", "g", "be", "",
                                                                         "pids"], ["o", "", "sum"]),
                                           helper.make_node("Mul", ["o", "sum"], ["y"])],
                                          {**EMBED, "pids": np.array([[4, 0, 4]], np.int32)}),
    "attention": ([ms("Attention", ["x", "w", "b"], num_heads=2)], attention_case()),
    "attention_key_mask": ([ms("Attention", ["x", "w", "b", "m"], num_heads=2)],
                           {**attention_case(), "m": np.array([[1, 1, 0], [1, 1, 1]], np.int32)}),
    "attention_lengths_scale": ([ms("Attention", ["x", "w", "b", "m"], num_heads=4, scale=0.3)],
                                {**attention_case(), "m": np.array([2, 3], np.int32)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_contrib_rule_matches_finite_differences(case):
    nodes, tensors = CASES[case]
    result = check_gradients(model(nodes, tensors), coords=8)
    used = {t for n in nodes for t in n.input}
    expected = {k for k, v in tensors.items() if np.asarray(v).dtype == np.float32 and k in used}
    assert set(result.errors) == expected, "a weight was not trained"
    assert result.worst < TOLERANCE, f"{case}: {result.errors}"


def test_frozen_weights_are_named_with_the_op_before_training(caplog):
    """An op the rules refuse says, once and before training, which op and node froze which weights."""
    nodes = [ms("Attention", ["x", "w", "b"], ["y0"], name="attn0", num_heads=2, unidirectional=1),
             helper.make_node("Mul", ["y0", "k"], ["y"])]
    with caplog.at_level("WARNING", logger="onnxprune"):
        tg = build_training_graph(model(nodes, {**attention_case(), "k": r(D)}), loss="mse")
    assert tg.trainable == ["k"]
    assert set(tg.frozen) == {"x", "w", "b"}
    (line,) = tg.frozen_summary
    assert "Attention" in line and "unidirectional" in line and "'attn0'" in line
    assert "3 weights" in line and all(w in line for w in ("x", "w", "b"))
    assert [rec.getMessage() for rec in caplog.records] == [f"frozen weights: {line}"]
