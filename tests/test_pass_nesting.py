"""Pipelines nest (in Python and in recipes), and the base holds every pass to its in-place/functional
declaration: a pass that breaks it is caught on the call that breaks it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune import BadInputError
from onnxprune.passes import (ChannelPruning, Pass, PassContext, PassError, PassResult, Pipeline, Validate,
                              create_pass)
from onnxprune.passes.recipe import recipe_from_dict
from onnxprune.report import schema

RESIDUAL = FIXTURES / "residual.onnx"


def params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


class Stamp(Pass):
    """In place: writes a doc string into the model it is given."""

    in_place = changes_input = True

    def call(self, model, context):
        model.doc_string = "stamped"
        return PassResult(model, True)


def test_nested_pipeline_prunes_like_the_flat_one():
    model = onnx.load(str(RESIDUAL))
    before = model.SerializeToString()
    flat = Pipeline([ChannelPruning(0.5, round_to=1), Validate(min_cosine=0.0)]).run(model, evaluate=False)
    inner = Pipeline([ChannelPruning(0.5, round_to=1)])
    nested = Pipeline([inner, Validate(min_cosine=0.0)]).run(model, PassContext(model, bench_rounds=0))
    assert model.SerializeToString() == before
    assert nested.model.SerializeToString() == flat.model.SerializeToString()
    assert nested.changed and nested.passed and params(nested.model) < params(model)
    report = nested.report
    schema.check(report)
    assert [p["name"] for p in report["passes"]] == ["Pipeline", "Validate"]
    assert [p["name"] for p in report["passes"][0]["report"]["passes"]] == ["ChannelPruning"]
    assert report["plan"] == flat.report["plan"]  # the inner pipeline's plan reaches the top
    assert report["options"]["passes"][0] == {"pass": "Pipeline",
                                              "passes": [{"pass": "ChannelPruning", "ratio": 0.5, "round_to": 1}]}


def test_a_gate_missed_inside_a_nested_pipeline_stops_the_outer_one():
    model = onnx.load(str(RESIDUAL))
    inner = Pipeline([ChannelPruning(0.5), Validate(min_cosine=0.99999)])
    result = Pipeline([inner, Stamp()]).run(model, PassContext(model, bench_rounds=0))
    assert not result.passed and [g.name for g in result.gates] == ["cosine"]
    assert [p["name"] for p in result.report["passes"]] == ["Pipeline"]
    assert result.model.doc_string != "stamped"


def test_pipeline_is_a_registered_pass_whose_options_rebuild_it():
    pipeline = create_pass("Pipeline", {"passes": [{"pass": "channel_pruning", "ratio": 0.3},
                                                   {"pass": "Pipeline", "passes": [{"pass": "Validate"}]}]})
    assert isinstance(pipeline.passes[1], Pipeline) and isinstance(pipeline.passes[1].passes[0], Validate)
    assert create_pass("Pipeline", pipeline.options()).options() == pipeline.options()
    with pytest.raises(BadInputError, match=r"pass Pipeline: passes\[2\]: unknown pass 'Prune'"):
        create_pass("Pipeline", {"passes": [{"pass": "Validate"}, {"pass": "Prune"}]})
    with pytest.raises(BadInputError, match=r"passes\[1\] needs a 'pass' name"):
        Pipeline([{"ratio": 0.3}])
    with pytest.raises(BadInputError, match="non-empty list"):
        create_pass("Pipeline", {"passes": "ChannelPruning"})


def test_recipes_nest_pipelines():
    doc = {"input": str(RESIDUAL), "passes": [
        {"pass": "Pipeline", "passes": [{"pass": "ChannelPruning", "ratio": 0.3, "round_to": 1},
                                        {"pass": "Sparsify", "sparsity": 0.3}]},
        {"pass": "Validate", "min_cosine": 0.0}]}
    recipe = recipe_from_dict(doc)
    model = onnx.load(str(RESIDUAL))
    result = recipe.pipeline().run(model, PassContext(model, bench_rounds=0))
    assert result.passed and params(result.model) < params(model)
    assert [p["name"] for p in result.report["passes"][0]["report"]["passes"]] == ["ChannelPruning", "Sparsify"]
    bad = {"input": str(RESIDUAL), "passes": [{"pass": "Pipeline", "passes": [{"pass": "ChannelPruning",
                                                                                  "wobble": 1}]}]}
    with pytest.raises(BadInputError, match=r"<recipe>: passes\[1\]: pass Pipeline: passes\[1\]: .*wobble"):
        recipe_from_dict(bad)


def test_a_functional_pass_that_modifies_its_input_is_caught():
    class Sneaky(Pass):
        def call(self, model, context):
            model.graph.node[0].name = "renamed"
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            return PassResult(copy, True)

    model = onnx.load(str(RESIDUAL))
    with pytest.raises(PassError, match="Sneaky modified the model it was given"):
        Pipeline([Sneaky()]).run(model, evaluate=False)


def test_an_in_place_pass_that_returns_a_copy_is_caught():
    class Copier(Pass):
        in_place = changes_input = True

        def call(self, model, context):
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            return PassResult(copy, False)

    model = onnx.load(str(RESIDUAL))
    with pytest.raises(PassError, match="Copier is declared in-place but returned a different model"):
        Copier()(model, PassContext(model))


def test_a_functional_pass_that_returns_its_input_as_changed_is_caught():
    class Liar(Pass):
        def call(self, model, context):
            return PassResult(model, True)

    model = onnx.load(str(RESIDUAL))
    with pytest.raises(PassError, match="Liar is functional but returned its input object as changed"):
        Liar()(model, PassContext(model))


def test_in_place_steps_never_reach_the_caller_of_a_functional_pipeline():
    model = onnx.load(str(RESIDUAL))
    before = model.SerializeToString()
    result = Pipeline([Validate(), Stamp()]).run(model, evaluate=False)
    assert model.SerializeToString() == before
    assert result.model is not model and result.model.doc_string == "stamped" and result.changed
    assert not Pipeline([Stamp()]).in_place and not Pipeline([Stamp()]).changes_input


def test_an_in_place_pipeline_writes_into_the_model_it_is_given():
    model = onnx.load(str(RESIDUAL))
    pipeline = Pipeline([ChannelPruning(0.5, round_to=1), Stamp()], in_place=True)
    result = pipeline(model, PassContext(onnx.load(str(RESIDUAL))))
    assert result.model is model and model.doc_string == "stamped"
    assert params(model) < params(onnx.load(str(RESIDUAL)))
    assert pipeline.in_place and pipeline.options()["in_place"] is True


def test_validate_is_read_only():
    model = onnx.load(str(RESIDUAL))
    result = Validate()(model, PassContext(model))
    assert Validate.in_place and not Validate.changes_input
    assert result.model is model and not result.changed
