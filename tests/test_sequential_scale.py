"""Sequential reconstruction at scale: wide linear layers solved for their output, re-solved weights
kept on disk (memory bounded by one weight, not by all of them), and the in-place solve equal to the
plain one."""

from __future__ import annotations

import os

import numpy as np
from onnx import numpy_helper

from test_sequential import _error, _mlp, _setup
from onnxprune.apply.rewrite import apply_plan
from onnxprune.couple.plan import Plan
from onnxprune.load.data import Dataset
from onnxprune.recover import sequential
from onnxprune.recover.ridge_choice import solve
from onnxprune.recover.sequential import _consumers, reconstruct
from onnxprune.recover.spilled import SpilledArrays


def _wide_mlp(hidden: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    model = _mlp(rng.standard_normal((hidden, 4)).astype(np.float32), rng.standard_normal(hidden).astype(np.float32),
                 rng.standard_normal((3, hidden)).astype(np.float32))
    data = Dataset({"x": rng.standard_normal((256, 1, 4)).astype(np.float32)})
    working, dep = _setup(model, data)
    grp = next(g for g in dep.groups if any(s.tensor == "w1" for s in g.slots))
    removed = np.zeros(dep.num_channels, dtype=bool)
    removed[grp.channels[::3]] = True  # a third of the hidden units
    return model, data, dep, removed


def test_wide_linear_layer_is_solved_for_its_output(monkeypatch):
    """More kept inputs than a conv may have (MAX_FEATURES) still gives a MatMul/Gemm an output solve,
    which fits the dense output at least as well as the per-channel solve it replaces."""
    model, data, dep, removed = _wide_mlp()
    monkeypatch.setattr(sequential, "MAX_FEATURES", 4)
    kinds = {c.name or c.node: c.kind for c in _consumers(dep, removed)}
    assert kinds and set(kinds.values()) == {"output"}
    output = apply_plan(Plan(dep, removed), reconstruct(dep, removed, data, ridge=1e-9))
    monkeypatch.setattr(sequential, "MAX_LINEAR_FEATURES", 4)
    assert {c.kind for c in _consumers(dep, removed)} == {"channel"}
    channel = apply_plan(Plan(dep, removed), reconstruct(dep, removed, data, ridge=1e-9))
    assert _error(model, output, data) <= _error(model, channel, data) + 1e-6
    assert _error(model, output, data) < _error(model, apply_plan(Plan(dep, removed)), data)


def test_spilled_weights_give_the_same_model():
    """Re-solved values handed over on disk (every array spilled) write the model the dict path writes;
    each read is a read-only memory map of its file."""
    _, data, dep, removed = _wide_mlp()
    held: dict = {}
    rest = reconstruct(dep, removed, data, presliced=held)
    spilled = SpilledArrays(min_bytes=0)
    rest_spilled = reconstruct(dep, removed, data, presliced=spilled)
    assert set(spilled) == set(held) and spilled.spilled() == len(held) > 0
    assert all(isinstance(spilled[name], np.memmap) for name in spilled)
    a, b = apply_plan(Plan(dep, removed), rest, held), apply_plan(Plan(dep, removed), rest_spilled, spilled)
    got = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    for t in a.graph.initializer:
        np.testing.assert_array_equal(got[t.name], numpy_helper.to_array(t), err_msg=t.name)
    folder = spilled._folder.name
    spilled.close()
    assert not os.path.exists(folder)


def test_spilled_arrays_small_values_stay_in_memory_and_replace_files():
    store = SpilledArrays(min_bytes=64)
    store["small"] = np.arange(4, dtype=np.float32)
    store["big"] = np.ones(64, np.float32)
    store["big"] = np.full(64, 2, np.float32)  # replaced: the old file goes
    assert store.spilled() == 1 and len(store) == 2 and not isinstance(store["small"], np.memmap)
    np.testing.assert_array_equal(store["big"], np.full(64, 2, np.float32))
    del store["big"]
    assert "big" not in store and store.spilled() == 0
    store.close()


def test_in_place_solve_equals_the_plain_solve():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((50, 6)), rng.standard_normal((50, 3))
    prior, diag = rng.standard_normal((6, 3)), np.r_[np.ones(5), 0.0]
    plain = solve(x.T @ x, x.T @ y, 50, 0.1, diag, prior)
    gram, cross = x.T @ x, x.T @ y
    np.testing.assert_array_equal(solve(gram, cross, 50, 0.1, diag, prior, overwrite=True), plain)
    reference = np.linalg.solve(x.T @ x / 50 + 0.1 * np.diag(diag), x.T @ y / 50 + 0.1 * diag[:, None] * prior)
    np.testing.assert_allclose(plain, reference, rtol=1e-12, atol=1e-12)


def test_dropping_grams_keeps_the_moments():
    """Once the plan is chosen the Grams go (up to 1 GB); the norms' moments stay as they were."""
    from onnxprune.score.calibration import ChannelStats, Statistics

    st = ChannelStats(1, want_gram=True)
    st.add(np.random.default_rng(0).standard_normal((32, 5)).astype(np.float32) + 3)
    stats = Statistics({("x", 1): st}, samples=32)
    before = (st.sum.copy(), st.sq_sum.copy(), st.gram)
    stats.drop_grams()
    assert before[2] is not None and st.gram is None and st.covariance() is None
    np.testing.assert_array_equal(st.sum, before[0])
    np.testing.assert_array_equal(st.sq_sum, before[1])
