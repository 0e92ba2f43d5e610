"""Passes and the Pipeline: composition, gates, the registry, reports that meet the schema."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune import BadInputError
from onnxprune.report import schema
from onnxprune.load.data import Dataset
from onnxprune.passes import PASSES, ChannelPruning, Pass, PassContext, PassResult, Pipeline, Validate, available, create_pass, get_pass, register

RESIDUAL = FIXTURES / "residual.onnx"
DIGITS = FIXTURES / "digits_cnn.onnx"


def test_pipeline_prunes_validates_and_reports():
    model = onnx.load(str(RESIDUAL))
    before = model.SerializeToString()
    context = PassContext(dense=model, bench_rounds=2)
    result = Pipeline([ChannelPruning(0.5, round_to=1), Validate(min_cosine=0.0)]).run(model, context)
    assert model.SerializeToString() == before  # passes never modify their input
    assert result.changed and result.passed
    onnx.checker.check_model(result.model, full_check=True)
    report = result.report
    schema.check(report)
    assert [p["name"] for p in report["passes"]] == ["ChannelPruning", "Validate"]
    assert [p["changed"] for p in report["passes"]] == [True, False]
    assert report["after"]["params"] < report["before"]["params"]
    assert report["plan"]["removed"] > 0 and report["latency_ratio"] > 0
    assert report["options"]["passes"][0] == {"pass": "ChannelPruning", "ratio": 0.5, "round_to": 1}
    validate = report["passes"][1]["report"]
    assert validate["validation"]["shape_inference"] == "passed"
    assert validate["gates"][0]["name"] == "cosine" and validate["gates"][0]["passed"]


def test_two_pruning_passes_compound():
    model = onnx.load(str(RESIDUAL))
    once = Pipeline([ChannelPruning(0.3, round_to=1)]).run(model, evaluate=False)
    twice = Pipeline([ChannelPruning(0.3, round_to=1), ChannelPruning(0.3, round_to=1)]).run(model, evaluate=False)
    count = lambda m: sum(int(np.prod(t.dims)) for t in m.graph.initializer)  # noqa: E731
    assert count(twice.model) < count(once.model) < count(model)
    assert "before" not in twice.report and len(twice.report["passes"]) == 2


def test_failed_gate_stops_the_pipeline():
    calls = []

    class Spy(Pass):
        def call(self, model, context):
            calls.append(1)
            return PassResult(model, False)

    model = onnx.load(str(RESIDUAL))
    steps = [ChannelPruning(0.5), Validate(min_cosine=0.99999), Spy()]
    result = Pipeline(steps).run(model, PassContext(model, bench_rounds=0))
    assert not result.passed and calls == []
    assert [g.name for g in result.gates] == ["cosine"] and not result.gates[0].passed
    assert [p["name"] for p in result.report["passes"]] == ["ChannelPruning", "Validate"]
    assert result.report["gates"][0]["passed"] is False
    schema.check(result.report)


def test_context_data_gives_accuracy_and_calibration_reaches_pruning():
    model = onnx.load(str(DIGITS))
    test = np.load(FIXTURES / "digits_test.npz")
    data = Dataset({"input": test["input"][:64, None]}, test["labels"][:64])
    context = PassContext(model, calib=str(FIXTURES / "digits_calib.npz"), data=data, bench_rounds=0)
    steps = [ChannelPruning(target_macs=0.6, criterion="activation", recover="lstsq"), Validate(max_drop=50)]
    result = Pipeline(steps).run(model, context)
    assert result.passed
    fidelity = result.report["fidelity"]
    assert fidelity["data"] == "given" and fidelity["samples"] == 64 and "accuracy_pruned" in fidelity
    options = result.report["passes"][0]["report"]["options"]
    assert options["criterion"] == "activation" and options["recover"] == "lstsq"
    assert result.report["after"]["macs"] < 0.65 * result.report["before"]["macs"]


def test_registry_names_and_errors():
    assert get_pass("ChannelPruning") is ChannelPruning
    assert get_pass("channel_pruning") is ChannelPruning and get_pass("validate") is Validate
    assert {"ChannelPruning", "Validate"} <= set(available())
    with pytest.raises(BadInputError, match="unknown pass 'Prune'; available passes: .*ChannelPruning"):
        get_pass("Prune")
    with pytest.raises(BadInputError, match="unknown option.*wobble"):
        create_pass("ChannelPruning", {"ratio": 0.3, "wobble": 1})
    with pytest.raises(BadInputError, match="Validate.*min_cosin"):
        create_pass("Validate", {"min_cosin": 0.9})
    with pytest.raises(BadInputError, match="min_cosine"):
        Validate(min_cosine=3)
    with pytest.raises(BadInputError):
        Pipeline([])


def test_adding_a_pass_is_one_registration():
    @register
    class Identity(Pass):
        """Returns the model untouched."""

        def call(self, model, context):
            return PassResult(model, False, {"note": "nothing to do"})
    try:
        step = create_pass("identity")
        model = onnx.load(str(RESIDUAL))
        result = Pipeline([step]).run(model, PassContext(model, bench_rounds=0))
        assert result.model is model and not result.changed
        assert result.report["passes"][0]["report"] == {"note": "nothing to do"}
        schema.check(result.report)
    finally:
        PASSES.pop("Identity")


def test_pass_conditions_run_around_call():
    class Picky(Pass):
        def requires(self, model, context):
            raise BadInputError("Picky needs a model with an LSTM")

        def call(self, model, context):  # pragma: no cover - never reached
            raise AssertionError

    model = onnx.load(str(RESIDUAL))
    with pytest.raises(BadInputError, match="LSTM"):
        Pipeline([Picky()]).run(model)
