"""How a latency target's candidates are measured against dense: per round the fastest of a few
back-to-back runs per side, the median of the rounds' ratios (as the benches that judge the landing).
No timing is asserted: the estimator runs on given times, the sessions are stubs that count runs."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.select import latency
from onnxprune.select.latency import ratio_of_fastest


def test_fastest_of_the_repeats_is_not_pulled_toward_one_by_a_fixed_per_run_cost():
    rng = np.random.default_rng(0)
    rounds, repeat = 30, 3
    base = np.array([10.0, 4.0])  # true times: the candidate at 0.4 of dense
    times = np.broadcast_to(base[None, :, None], (rounds, 2, repeat)).copy()
    # the first run of each side in a round pays a cold start of 3 (caches, thread wake-up) ...
    times[:, :, 0] += 3.0
    # ... and other jobs add bursts at random to the other runs
    times[:, :, 1:] += rng.exponential(1.0, (rounds, 2, repeat - 1)) * (rng.random((rounds, 2, repeat - 1)) < 0.3)
    assert ratio_of_fastest(times) == pytest.approx(0.4, abs=0.01)
    single = np.median(times[:, 1, 0] / times[:, 0, 0])  # one run per side, as the landing measured before
    assert single > 0.5  # (4 + 3) / (10 + 3)


class Counting:
    def __init__(self):
        self.runs = 0

    def run(self, outputs, feed):
        self.runs += 1


def test_each_round_runs_both_sides_repeat_times_after_the_warmup():
    dense, candidate = Counting(), Counting()
    ratio = latency.paired_ratio(dense, candidate, {}, rounds=4, repeat=3)
    assert dense.runs == candidate.runs == latency.WARMUP + 4 * 3
    assert np.isfinite(ratio) and ratio > 0
