"""Ridge chosen on held-out rows: strong when the fit would follow noise, weak when the data disagree with the prior."""

from __future__ import annotations

import numpy as np

from onnxprune.recover.ridge_choice import MULTIPLES, add_held, best_multiple, held_out


def _sums(x, y):
    return x.T @ x, x.T @ y, len(x)


def _case(rows: int, noise: float, shift: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    f, o = 40, 3
    prior = rng.standard_normal((f, o))
    truth = prior + shift * rng.standard_normal((f, o))
    x_tr, x_ho = rng.standard_normal((rows, f)), rng.standard_normal((400, f))
    y_tr = x_tr @ truth + noise * rng.standard_normal((rows, o))
    y_ho = x_ho @ truth + noise * rng.standard_normal((400, o))
    return best_multiple(_sums(x_tr, y_tr), _sums(x_ho, y_ho), 1e-2, np.ones(f), prior)


def test_few_noisy_rows_near_the_prior_take_a_strong_ridge():
    assert _case(rows=30, noise=3.0, shift=0.01) >= 100 * MULTIPLES[0]


def test_many_clean_rows_far_from_the_prior_take_the_base_ridge():
    assert _case(rows=2000, noise=0.01, shift=1.0) == MULTIPLES[0]


def test_held_out_batches_and_sums():
    assert [held_out(b) for b in range(8)] == [False, False, False, True] * 2  # batch 0 always fits
    extra: dict = {}
    x, y = np.ones((5, 2)), np.arange(5.0)[:, None]
    add_held(extra, x, y)
    add_held(extra, x, y)
    np.testing.assert_allclose(extra["held"][0], 2 * x.T @ x)
    np.testing.assert_allclose(extra["held"][1], 2 * x.T @ y)
    assert extra["held"][2] == 10
