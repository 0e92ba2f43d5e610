"""A softmax written out in elementary ops (jax2tf, tf2onnx: magika) is read as a Softmax: fine-tuning
distils the logits it normalizes, not its probabilities (recover/logits.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.finetune import finetune
from onnxprune.recover.features import with_outputs
from onnxprune.recover.logits import softmax_logits


def _classifier(seed: int, form: str = "jax", axis: int = 1, shaped: bool = True) -> onnx.ModelProto:
    """x (N, 6) -> Gemm -> z (N, 4) -> a softmax of z over `axis` -> probs (N, 4), spelled as `form`:
    "softmax" (one node), "jax" (jax2tf: Exp(z - Max(-inf, ReduceMax z)) / Expand(Reshape(ReduceSum))),
    "reciprocal" (Exp(z) * Reciprocal(ReduceSum keepdims)), or "other" (Exp(z) / ReduceSum of another Exp);
    shaped=False declares no shape for the output (shape inference finds its rank)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "w"),
             numpy_helper.from_array(np.asarray([axis], np.int64), "axes"),
             numpy_helper.from_array(np.asarray(-np.inf, np.float32), "neg_inf"),
             numpy_helper.from_array(np.asarray([-1, 1] if axis == 1 else [1, 4], np.int64), "kept"),
             numpy_helper.from_array(np.asarray([1, 4] if axis == 1 else [1, 1], np.int64), "ones")]
    nodes = [helper.make_node("Gemm", ["x", "w"], ["z"], transB=1)]
    if form == "softmax":
        nodes.append(helper.make_node("Softmax", ["z"], ["probs"], axis=axis))
    elif form == "jax":
        nodes += [helper.make_node("ReduceMax", ["z"], ["m"], axes=[axis], keepdims=0),
                  helper.make_node("Max", ["neg_inf", "m"], ["m2"]),
                  helper.make_node("Reshape", ["m2", "kept"], ["m3"]),
                  helper.make_node("Shape", ["z"], ["zs"]),
                  helper.make_node("Expand", ["m3", "zs"], ["mb"]),
                  helper.make_node("Sub", ["z", "mb"], ["a"]),
                  helper.make_node("Exp", ["a"], ["e"]),
                  helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=0),
                  helper.make_node("Reshape", ["s", "kept"], ["s2"]),
                  helper.make_node("Expand", ["s2", "zs"], ["sb"]),
                  helper.make_node("Div", ["e", "sb"], ["probs"])]
    elif form == "reciprocal":
        nodes += [helper.make_node("Exp", ["z"], ["e"]),
                  helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1),
                  helper.make_node("Reciprocal", ["s"], ["r"]),
                  helper.make_node("Mul", ["e", "r"], ["probs"])]
    else:
        nodes += [helper.make_node("Exp", ["z"], ["e"]), helper.make_node("Exp", ["x"], ["f"]),
                  helper.make_node("ReduceSum", ["f", "axes"], ["s"], keepdims=1),
                  helper.make_node("Div", ["e", "s"], ["probs"])]
    graph = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 4] if shaped else None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_spelled_out_softmax_computes_a_softmax():
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    want = session(_classifier(0, "softmax")).run(None, {"x": x})[0]
    for form in ("jax", "reciprocal"):
        assert np.allclose(session(_classifier(0, form)).run(None, {"x": x})[0], want, atol=1e-6)


@pytest.mark.parametrize("form, found", [("jax", ("z", None)), ("reciprocal", ("z", None)), ("other", None),
                                         ("softmax", ("z", None))])
def test_its_logits_are_found(form, found):
    assert softmax_logits(_classifier(0, form), "probs") == found
    assert softmax_logits(_classifier(0, form, shaped=False), "probs") == found  # the rank inferred


def test_over_the_first_axis_its_logits_come_with_that_axis():
    assert softmax_logits(_classifier(0, "reciprocal", axis=0), "probs") == ("z", 0)
    assert softmax_logits(_classifier(0, "reciprocal", axis=0, shaped=False), "probs") == ("z", 0)


def test_fine_tuning_trains_it_exactly_as_the_single_softmax_node():
    """Before, the spelled-out softmax's probabilities were distilled as if they were logits: other weights."""
    x = np.random.default_rng(1).normal(size=(128, 1, 6)).astype(np.float32)
    trained = {form: finetune(_classifier(5, form), Dataset({"x": x}), 2, teacher=_classifier(0, form), lr=1e-2,
                              batch_size=32, progress=False, threads=1, keep="last")
               for form in ("softmax", "jax")}
    weights = {form: numpy_helper.to_array(next(t for t in r.model.graph.initializer if t.name == "w"))
               for form, r in trained.items()}
    assert not np.allclose(weights["jax"], numpy_helper.to_array(_classifier(5).graph.initializer[0]))  # it trained
    assert np.allclose(weights["jax"], weights["softmax"], atol=1e-5)


def _exp_sum(sum_nodes: list, max_axes: list[int] | None = None, max_const: np.ndarray | None = None
             ) -> onnx.ModelProto:
    """z (N, 3, 3) -> [a = z - ReduceMax(z, max_axes) clamped by Max(max_const)] -> e = Exp -> ReduceSum(e) and
    `sum_nodes` making "s" -> Div(e, s) -> probs."""
    inits = [numpy_helper.from_array(np.asarray([2], np.int64), "last"),
             numpy_helper.from_array(np.asarray([1], np.int64), "one")]
    nodes = [helper.make_node("Identity", ["x"], ["z"])]
    shifted = "z"
    if max_axes is not None:
        nodes.append(helper.make_node("ReduceMax", ["z"], ["m"], axes=max_axes, keepdims=1))
        if max_const is not None:
            inits.append(numpy_helper.from_array(max_const.astype(np.float32), "floor"))
            nodes.append(helper.make_node("Max", ["floor", "m"], ["m2"]))
        nodes.append(helper.make_node("Sub", ["z", "m2" if max_const is not None else "m"], ["a"]))
        shifted = "a"
    nodes += [helper.make_node("Exp", [shifted], ["e"]), *sum_nodes, helper.make_node("Div", ["e", "s"], ["probs"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


KEPT = [helper.make_node("ReduceSum", ["e", "last"], ["s"], keepdims=1)]
DROPPED = [helper.make_node("ReduceSum", ["e", "last"], ["s0"], keepdims=0)]


@pytest.mark.parametrize("model, found", [
    (_exp_sum(KEPT, max_axes=[2]), ("z", None)),                                  # the row maximum: x
    (_exp_sum(KEPT, max_axes=[1]), ("a", None)),                                  # another axis: not a shift
    (_exp_sum(KEPT, max_axes=[2], max_const=np.asarray(-np.inf)), ("z", None)),   # jax's clamp at -inf
    (_exp_sum(KEPT, max_axes=[2], max_const=np.asarray([0.0, 3.0, -3.0])), ("a", None)),  # a per-class floor
    (_exp_sum(DROPPED + [helper.make_node("Unsqueeze", ["s0", "last"], ["s"])]), ("z", None)),
    (_exp_sum(DROPPED + [helper.make_node("Unsqueeze", ["s0", "one"], ["s"])]), None),  # sums on the wrong axis
    (_exp_sum(DROPPED + [helper.make_node("Identity", ["s0"], ["s"])]), None),    # no axis restored
    (_exp_sum(KEPT[:0] + [helper.make_node("ReduceSum", ["e", "last"], ["s1"], keepdims=1),
                          helper.make_node("Squeeze", ["s1", "last"], ["s"])]), None),
])
def test_only_a_true_softmax_is_read_as_one(model, found):
    assert softmax_logits(model, "probs") == found
    if found is not None:  # what is returned really is the softmax's input
        x = np.random.default_rng(0).normal(size=(2, 3, 3)).astype(np.float32)
        sess = session(with_outputs(model, [found[0]]))
        probs, logits = sess.run(["probs", found[0]], {"x": x})
        e = np.exp(logits - logits.max(-1, keepdims=True))
        assert np.allclose(probs, e / e.sum(-1, keepdims=True), atol=1e-6)
