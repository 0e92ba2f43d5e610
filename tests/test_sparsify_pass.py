"""Sparsify as a pass: unstructured and N:M zeros in a model that keeps its shapes and runs, options
checked when the pass is made (recipes fail before any work)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import FIXTURES
from onnxprune import BadInputError
from onnxprune.load.runtime import session
from onnxprune.passes import PassContext, Pipeline, Sparsify, Validate, create_pass, get_pass
from onnxprune.report import schema

DIGITS = FIXTURES / "digits_cnn.onnx"


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) >= 2}


def test_unstructured_sparsify_zeroes_half_of_every_weight_and_keeps_shapes():
    model = onnx.load(str(DIGITS))
    before = model.SerializeToString()
    result = Pipeline([Sparsify(0.5), Validate(min_cosine=0.5)]).run(model, PassContext(model, bench_rounds=0))
    assert model.SerializeToString() == before and result.changed and result.passed
    schema.check(result.report)
    dense, sparse = weights(model), weights(result.model)
    assert {k: v.shape for k, v in dense.items()} == {k: v.shape for k, v in sparse.items()}
    for name, value in sparse.items():
        assert abs(np.mean(value == 0) - 0.5) < 0.02, name
    x = np.load(FIXTURES / "digits_test.npz")["input"][:8].astype(np.float32)
    out = session(result.model).run(None, {model.graph.input[0].name: x})[0]
    assert out.shape == (8, 10) and np.isfinite(out).all()
    entry = result.report["passes"][0]
    assert entry["name"] == "Sparsify" and entry["report"]["options"]["pattern"] == "unstructured"


def test_two_of_four_keeps_two_in_every_group_of_four_from_a_recipe_table():
    step = create_pass("sparsify", {"sparsity": {"linear": 0.5}, "pattern": "2:4"})
    assert get_pass("Sparsify") is Sparsify and step.options()["sparsity"] == {"conv": 0.0, "linear": 0.5}
    model = onnx.load(str(DIGITS))
    result = step(model, PassContext(model))
    sparse = weights(result.model)
    # groups of four run along the input-channel axis: axis 1 of a Conv weight and of a transB Gemm weight
    for name in ("conv3.weight", "fc.weight"):
        groups = np.moveaxis(sparse[name], 1, -1).reshape(-1, 4)
        assert ((groups != 0).sum(axis=1) <= 2).all() and np.mean(groups == 0) >= 0.5, name


def test_sparsity_zero_changes_nothing():
    model = onnx.load(str(DIGITS))
    result = Sparsify(0.0)(model, PassContext(model))
    assert not result.changed


@pytest.mark.parametrize("options, message", [
    ({"sparsity": 1.0}, r"sparsity = 1.0: must be a finite number in \[0, 1\)"),
    ({"sparsity": float("nan")}, r"sparsity = nan: must be a finite number in \[0, 1\)"),
    ({"sparsity": {"dense": 0.5}}, "sparsity keys are conv and linear, got dense"),
    ({"pattern": "4:2"}, "N:M with 0 < N < M"),
    ({"scope": "layer"}, "scope must be 'local' or 'global'"),
    ({"sparsty": 0.5}, "Sparsify.*sparsty"),
])
def test_bad_options_are_refused_when_the_pass_is_made(options, message):
    with pytest.raises(BadInputError, match=message):
        create_pass("Sparsify", options)
