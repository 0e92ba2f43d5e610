"""A prune that removes no channel says why in a warning (every channel frozen, naming the barrier; or
groups too narrow for the width rounding), instead of writing an unchanged model as if pruned. Wake-word
MLPs whose every layer feeds a decomposed LayerNorm met this silently."""

from __future__ import annotations

import logging

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import onnxprune


def _mlp(norm: bool, width: int):
    """x (1, 4) -> MatMul width -> [x - ReduceMean(x) over the features] -> Relu -> MatMul 3."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, width)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((width, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"])]
    if norm:
        nodes += [helper.make_node("ReduceMean", ["a"], ["mu"], axes=[-1]),
                  helper.make_node("Sub", ["a", "mu"], ["c"])]
    nodes += [helper.make_node("Relu", ["c" if norm else "a"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _warnings(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_every_channel_frozen_is_said_with_its_barrier(caplog):
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        result = onnxprune.prune(_mlp(norm=True, width=16), ratio=0.3, bench_rounds=0)
    assert result.plan.summary()["removed"] == 0
    said = _warnings(caplog)
    assert "removed no channels" in said and "ReduceMean" in said


def test_groups_too_narrow_for_the_rounding_are_said(caplog):
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        result = onnxprune.prune(_mlp(norm=False, width=16), ratio=0.2, bench_rounds=0, round_to=8)
    assert result.plan.summary()["removed"] == 0
    assert "removed no channels" in _warnings(caplog) and "--round-to" in _warnings(caplog)


def test_a_real_cut_warns_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        result = onnxprune.prune(_mlp(norm=False, width=16), ratio=0.5, bench_rounds=0, round_to=1)
    assert result.plan.summary()["removed"] == 8
    assert "removed no channels" not in _warnings(caplog)


def test_no_groups_at_all_is_said_with_the_analysis_note(caplog):
    """A model whose layers all sit in If branches has no groups: the warning says so (and why), not
    'every channel of the 0 groups is frozen ()'."""
    from test_macs_inside_branches import _branched_model
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 4)).astype(np.float32), "use": np.array([True])} for _ in range(4)]
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        onnxprune.prune(_branched_model(), calib=feeds, ratio=0.3, bench_rounds=0)
    said = _warnings(caplog)
    assert "removed no channels: the analysis found no layers" in said and "If" in said
