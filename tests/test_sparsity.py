"""Unstructured and N:M sparsity: exact shares, the N:M pattern, sparse storage, zipped size."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import FIXTURES
from onnxprune.api import sparsify
from onnxprune.load.data import synthetic_dataset
from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.runtime import run_dataset, session
from onnxprune.apply.sparsity import apply_masks, magnitude_masks, nm_mask, sparse_weights, to_sparse_initializers


@pytest.fixture(scope="module")
def digits():
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    return model, ModelGraph(model)


def test_local_share_is_exact_per_layer(digits):
    model, g = digits
    masks = magnitude_masks(g, {"conv": 0.5, "linear": 0.8})
    kinds = {w.name: w.kind for w in sparse_weights(g)}
    assert set(kinds.values()) == {"conv", "linear"}
    for name, mask in masks.items():
        want = 0.5 if kinds[name] == "conv" else 0.8
        assert abs((1 - mask.mean()) - want) <= 1.0 / mask.size
        # the kept weights are the largest ones
        w = np.abs(g.const(name))
        assert w[mask].min() >= w[~mask].max()


def test_global_share_is_exact_per_kind(digits):
    _, g = digits
    masks = magnitude_masks(g, 0.6, scope="global")
    total = sum(m.size for m in masks.values())
    zeros = sum((~m).sum() for m in masks.values())
    assert abs(zeros / total - 0.6) < 0.01
    assert len({round(1 - m.mean(), 2) for m in masks.values()}) > 1  # layers differ


def test_two_four_pattern():
    w = np.random.default_rng(0).standard_normal((6, 8, 3, 3)).astype(np.float32)
    mask = nm_mask(w, 2, 4, axis=1)
    blocks = np.moveaxis(mask, 1, -1).reshape(6, 3, 3, 2, 4)
    assert (blocks.sum(-1) == 2).all()
    kept = np.moveaxis(np.abs(w), 1, -1).reshape(6, 3, 3, 2, 4)
    dropped_max = np.where(~blocks, kept, -1).max(-1)
    kept_min = np.where(blocks, kept, np.inf).min(-1)
    assert (kept_min >= dropped_max).all()


def test_zeros_in_model_and_sparse_initializers_run(digits):
    model, g = digits
    masks = magnitude_masks(g, {"conv": 0.5, "linear": 0.8})
    sparse = apply_masks(model, masks)
    for init in sparse.graph.initializer:
        if init.name in masks:
            np.testing.assert_array_equal(numpy_helper.to_array(init) != 0, masks[init.name] & (g.const(init.name) != 0))
    stored = to_sparse_initializers(sparse, min_sparsity=0.4)
    assert len(stored.graph.sparse_initializer) > 0
    a, b = session(sparse), session(stored)
    data = synthetic_dataset(a, g.input_shapes, 3)
    np.testing.assert_allclose(run_dataset(a, data)[0], run_dataset(b, data)[0], rtol=1e-5, atol=1e-6)


def test_sparsify_report_sizes():
    result = sparsify(FIXTURES / "digits_cnn.onnx", {"conv": 0.5, "linear": 0.8}, eval_data=FIXTURES / "digits_test.npz")
    rep = result.report
    assert rep["sparsity"]["zip_bytes"] < rep["dense_zip_bytes"]
    assert 0.45 < rep["sparsity"]["sparsity"] < 0.6
    assert "accuracy_pruned" in rep["fidelity"]
    with pytest.raises(BadInputError):
        sparsify(FIXTURES / "digits_cnn.onnx", 1.5)
    with pytest.raises(BadInputError):
        sparsify(FIXTURES / "digits_cnn.onnx", 0.5, pattern="4:2")
