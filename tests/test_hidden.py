"""Hidden (residual-stream) width: one group through embeddings, residual Adds, norms and projections.

The zero-channel oracle for the stream: the pruned model must equal the dense model with the removed
channels zeroed and each norm's statistics taken over the kept channels (check/stream_oracle.py); the
plain zeroed model must not (the statistics do change). Fixtures: fixtures/transformers/make_stream.py.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest

from conftest import FIXTURES, random_plan
from onnxprune.api import prune
from onnxprune.apply.restore import PREFIX, add_restores, drop_identity_restores
from onnxprune.apply.rewrite import apply_plan
from onnxprune.check.oracle import zero_removed
from onnxprune.check.stream_oracle import masked_reference
from onnxprune.check.validate import check_valid
from onnxprune.couple.dependency import build_dependency
from onnxprune.couple.hidden import hidden_sizes, stream_groups
from onnxprune.couple.plan import Plan
from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.report.formats import format_markdown, format_summary
from onnxprune.load.runtime import session

sys.path.insert(0, str(FIXTURES / "transformers"))
import make_stream  # noqa: E402

IDS = {"input_ids": np.random.default_rng(3).integers(0, make_stream.V, (1, make_stream.S))}


def stream_dep(model: onnx.ModelProto):
    dep = build_dependency(ModelGraph(model), hidden=True)
    restored = add_restores(model, dep)
    if restored is not None:
        model, dep = restored, build_dependency(ModelGraph(restored), hidden=True)
    return model, dep


def run(model: onnx.ModelProto) -> np.ndarray:
    return session(model).run(None, IDS)[0].astype(np.float64)


@pytest.mark.parametrize("norm", make_stream.NORMS)
def test_stream_is_one_group_and_the_masked_oracle_holds(norm):
    dense = make_stream.build(norm)
    model, dep = stream_dep(dense)
    streams = stream_groups(dep)
    assert len(streams) == 1 and streams[0].size == make_stream.D and streams[0].prunable == make_stream.D
    for seed in (0, 1):
        plan = random_plan(dep, 0.5, seed)
        kept = make_stream.D - int(plan.removed[streams[0].channels].sum())
        assert hidden_sizes(dep, plan.removed) == [{"group": streams[0].id, "before": make_stream.D, "after": kept}]
        pruned = drop_identity_restores(apply_plan(plan))
        check_valid(pruned, dense)
        shapes = {t.name: list(t.dims) for t in pruned.graph.initializer}
        assert shapes["wte"] == [make_stream.V, kept]  # the embedding table lost its columns
        reference, small = run(masked_reference(dep, plan.removed)), run(pruned)
        assert small.shape == run(dense).shape  # the interface keeps its width
        scale = np.abs(reference).max()
        assert np.abs(reference - small).max() / scale < 1e-5
        assert np.abs(run(zero_removed(dep, plan.removed)) - small).max() / scale > 1e-2  # statistics moved


def test_hidden_off_freezes_the_stream_with_its_reason():
    dep = build_dependency(ModelGraph(make_stream.build("layer")))
    frozen = [grp for grp in dep.groups if grp.size == make_stream.D and grp.prunable == 0]
    assert frozen and any("--hidden on" in f.reason for grp in frozen for f in grp.freezes)


def test_restore_is_dropped_when_the_stream_keeps_its_width():
    dense = make_stream.build("layer")
    model, dep = stream_dep(dense)
    assert any(n.name.startswith(PREFIX) for n in model.graph.node)
    pruned = drop_identity_restores(apply_plan(Plan(dep, np.zeros(dep.num_channels, dtype=bool), {})))
    assert not any(n.name.startswith(PREFIX) for n in pruned.graph.node)
    assert len(pruned.graph.node) == len(dense.graph.node)
    np.testing.assert_allclose(run(pruned), run(dense), rtol=1e-5, atol=1e-5)


def test_fused_ort_norms_carry_the_stream():
    """bert_tiny_ort: EmbedLayerNormalization, SkipLayerNormalization and Attention on the stream."""
    dense = onnx.load(str(FIXTURES / "transformers" / "bert_tiny_ort.onnx"))
    model, dep = stream_dep(dense)
    (stream,) = stream_groups(dep)
    assert stream.prunable == stream.size
    plan = random_plan(dep, 0.5, 0)
    pruned = drop_identity_restores(apply_plan(plan))
    check_valid(pruned, dense)
    kept = stream.size - int(plan.removed[stream.channels].sum())
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    gammas = [n.input[2] for n in pruned.graph.node if n.op_type == "SkipLayerNormalization"]
    assert gammas and all(dims[name] == [kept] for name in gammas)


def test_auto_turns_on_only_when_the_target_needs_it(stream_calib):
    model = make_stream.build("rms")
    reached = prune(model, target_params=0.3, calib=stream_calib, round_to=4, bench_rounds=0)
    assert reached.report["plan"]["hidden"][0]["after"] < make_stream.D
    assert reached.report["after"]["params"] <= 0.31 * reached.report["before"]["params"]
    width = reached.report["plan"]["hidden"][0]["after"]
    assert f"hidden (residual-stream) width {make_stream.D} -> {width}" in format_summary(reached.report)
    assert f"Hidden (residual-stream) width {make_stream.D} -> {width}." in format_markdown(reached.report)
    easy = prune(model, target_params=0.8, calib=stream_calib, round_to=4, bench_rounds=0)
    assert "hidden" not in easy.report["plan"]
    off = prune(model, target_params=0.3, calib=stream_calib, round_to=4, bench_rounds=0, hidden="off")
    assert "hidden" not in off.report["plan"]


def test_hidden_on_needs_calibration_data():
    with pytest.raises(BadInputError, match="--hidden on needs calibration data"):
        prune(make_stream.build("rms"), target_params=0.5, hidden="on", bench_rounds=0)


def test_a_saved_hidden_plan_is_reapplied(stream_calib, tmp_path):
    model = make_stream.build("layer")
    first = prune(model, target_params=0.3, calib=stream_calib, round_to=4, bench_rounds=0, hidden="on")
    path = tmp_path / "plan.json"
    path.write_text(__import__("json").dumps(first.plan.to_json()))
    again = prune(model, plan=str(path), bench_rounds=0)  # no data: the plan is applied as saved
    assert again.report["plan"]["hidden"] == first.report["plan"]["hidden"]
    shapes = {t.name: list(t.dims) for t in again.model.graph.initializer}
    assert shapes == {t.name: list(t.dims) for t in first.model.graph.initializer}
