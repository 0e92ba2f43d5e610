"""Big graphs evaluated lean (lean_stage.py): when ONNX Runtime builds a session for a graph over the
node threshold, the analysis (Prepared, ModelGraph, Dependency) is gone and the models are parked in
files; the pruned model, plan and report are what the ordinary path gives. The node threshold is
lowered so a small generated chain takes the big-graph path."""

from __future__ import annotations

import sys
import weakref
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxprune
from onnxprune import api, lean_stage
from onnxprune.check import evaluate, validate
from onnxprune.couple.plan import Plan
from onnxprune.load.parked import Parked

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_chain import chain_model  # noqa: E402


@pytest.fixture
def chain_path(tmp_path):
    path = tmp_path / "chain.onnx"
    onnx.save(chain_model(400), str(path))
    return str(path)


@pytest.fixture
def big_threshold(monkeypatch):
    """400 nodes count as a big graph."""
    monkeypatch.setattr(lean_stage, "ONE_AT_A_TIME_NODES", 100)
    monkeypatch.setattr(evaluate, "ONE_AT_A_TIME_NODES", 100)


def test_sessions_are_built_with_the_analysis_released(chain_path, big_threshold, monkeypatch):
    analysis: list[weakref.ref] = []
    real_prepare = api.prepare

    def watched_prepare(*args, **kwargs):
        prep = real_prepare(*args, **kwargs)
        analysis.extend(weakref.ref(o) for o in (prep, prep.graph, prep.dep))
        return prep

    built = []

    def spy(real):
        def session(model, *args, **kwargs):
            alive = [type(r()).__name__ for r in analysis if r() is not None]
            built.append((type(model).__name__, alive))
            return real(model, *args, **kwargs)
        return session

    monkeypatch.setattr(api, "prepare", watched_prepare)
    monkeypatch.setattr(evaluate, "session", spy(evaluate.session))  # the dense session (record_dense)
    monkeypatch.setattr(validate, "session", spy(validate.session))  # the pruned one (load_in_runtime)
    monkeypatch.setattr(lean_stage, "check_valid", spy(lean_stage.check_valid))  # the checker, deferred to here
    result = onnxprune.prune(chain_path, 0.3, bench_rounds=2)
    assert len(analysis) == 3
    # the checker on the pruned proto, then dense and pruned sessions from files: nothing of the analysis alive
    assert built == [("ModelProto", []), ("Parked", []), ("Parked", [])]
    assert result.plan.dep is None and result.plan.removed.any()
    assert ort.InferenceSession(result.model.SerializeToString()).get_outputs()[0].shape == [1, 4, 4, 4]


def test_lean_path_gives_what_the_ordinary_path_gives(chain_path, big_threshold, monkeypatch):
    lean = onnxprune.prune(chain_path, 0.3, bench_rounds=2)
    monkeypatch.setattr(lean_stage, "wanted", lambda *args: False)
    plain = onnxprune.prune(chain_path, 0.3, bench_rounds=2)
    assert isinstance(plain.plan, Plan) and plain.plan.dep is not None
    assert lean.model.SerializeToString() == plain.model.SerializeToString()
    assert lean.plan.to_json() == plain.plan.to_json() and lean.plan.summary() == plain.plan.summary()
    assert lean.plan.kept_per_group == plain.plan.kept_per_group
    np.testing.assert_array_equal(lean.plan.removed, plain.plan.removed)
    for report in (lean.report, plain.report):
        for side in ("before", "after"):
            report[side].pop("latency_ms")
        report.pop("latency_ratio")
    assert list(lean.report) == list(plain.report)
    assert lean.report == plain.report


def test_small_graphs_keep_the_ordinary_path(chain_path, monkeypatch):
    monkeypatch.setattr(lean_stage, "evaluate_lean", lambda *args: pytest.fail("a 401-node graph went lean"))
    result = onnxprune.prune(chain_path, 0.3, bench_rounds=0)
    assert result.plan.dep is not None


def test_parked_model_comes_back_unchanged():
    model = chain_model(40)
    parked = Parked(model)
    assert parked.nodes == len(model.graph.node) and parked.constants == len(model.graph.initializer)
    assert parked.load().SerializeToString() == model.SerializeToString()
