"""Layers with fewer calibration rows than features are solved in the rows' space (recover/few_rows.py):
the same ridge solution as the normal equations, and the same reconstruction, without the Gram."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import load_npz
from onnxprune.recover import few_rows, ridge_choice
from onnxprune.recover.sequential import reconstruct
from onnxprune.score.criteria import score
from onnxprune.select.plan import select_uniform


def _normal_equations(x, y, lam, prior, intercept):
    f = x.shape[1] - (1 if intercept else 0)
    diag = np.r_[np.ones(f), np.zeros(1 if intercept else 0)]
    return ridge_choice.solve(x.T @ x, x.T @ y, len(x), lam, diag, prior)


@pytest.mark.parametrize("intercept", [True, False])
def test_rows_space_solution_equals_the_normal_equations(intercept):
    rng = np.random.default_rng(0)
    n, f, m = 12, 40, 7
    x = rng.normal(size=(n, f)) + 0.5
    if intercept:
        x = np.concatenate([x, np.ones((n, 1))], axis=1)
    y = rng.normal(size=(n, m))
    prior = rng.normal(size=(x.shape[1], m))
    for lam in (1e-3, 1.0, 1e3):
        np.testing.assert_allclose(few_rows.solve(x, y, lam, prior, intercept),
                                   _normal_equations(x, y, lam, prior, intercept), rtol=1e-7, atol=1e-9)


def test_held_out_choice_equals_the_normal_equations_choice():
    rng = np.random.default_rng(1)
    f, m = 30, 5
    store = few_rows.RowStore(f + 1)
    w = rng.normal(size=(f, m))
    for b in range(4):
        x = rng.normal(size=(6, f))
        store.add(np.concatenate([x, np.ones((6, 1))], axis=1), x @ w + 0.3 * rng.normal(size=(6, m)), b == 3)
    prior = np.zeros((f + 1, m))
    (x, y), (xh, yh) = store.rows(held=False), store.rows(held=True)
    diag = np.r_[np.ones(f), 0.0]
    expected = ridge_choice.best_multiple((x.T @ x, x.T @ y, len(x)), (xh.T @ xh, xh.T @ yh, len(xh)), 0.05,
                                          diag, prior)
    assert few_rows.best_multiple(store, 0.05, prior, True) == expected


def test_store_refuses_as_many_rows_as_features():
    store = few_rows.RowStore(10)
    assert store.add(np.ones((6, 10)), np.ones((6, 2)), False)
    assert not store.add(np.ones((4, 10)), np.ones((4, 2)), False)  # 10 rows: the Gram is no bigger
    assert store.count == 6


def test_reconstruction_is_the_same_with_or_without_the_gram(monkeypatch):
    """digits_cnn's classifier sees one row per image: 8 samples, far fewer than its features."""
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    graph = ModelGraph(model)
    data = load_npz(FIXTURES / "digits_calib.npz", {n: len(graph.input_shapes[n]) for n in graph.inputs}).take(8)
    dep = build_dependency(ModelGraph(model, data.sample_shapes()))
    removed = select_uniform(dep, score(dep, "l2"), 0.4).removed
    rows_space = reconstruct(dep, removed, data)
    monkeypatch.setattr(few_rows.RowStore, "add", lambda *_: False)  # every layer through the Gram
    gram = reconstruct(dep, removed, data)
    assert rows_space.keys() == gram.keys() and rows_space
    for name in gram:
        np.testing.assert_allclose(rows_space[name], gram[name], rtol=2e-3, atol=1e-4 * np.abs(gram[name]).max())  # the Gram sums float32 products
