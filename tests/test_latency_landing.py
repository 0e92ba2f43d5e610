"""How a latency target's candidates are measured against dense: per round the fastest of a few
back-to-back runs per side, the median of the rounds' ratios (as the benches that judge the landing).
No timing is asserted: the estimator runs on given times, the sessions are stubs that count runs."""

from __future__ import annotations

import logging

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


def test_an_aim_that_gives_a_plan_already_timed_ends_the_search(monkeypatch, caplog):
    """ShuffleNet: the per-layer cap stops the plan above the target, every lower aim gives the same
    deepest plan; it is built and timed once, and the miss is reported."""
    from types import SimpleNamespace

    from onnxprune.couple.plan import Plan

    deepest = np.array([True, False])
    model = SimpleNamespace(kept=lambda removed: 0.64, dep=SimpleNamespace(graph=SimpleNamespace(model="dense",
                                                                                                input_shapes={})))
    built = []
    monkeypatch.setattr(latency, "session", lambda m, threads: m)
    monkeypatch.setattr(latency, "synthetic_dataset", lambda s, shapes, samples: SimpleNamespace(batches=lambda n: iter([{}])))
    monkeypatch.setattr(latency, "search_ratio", lambda select, cost, aim, **kw: Plan(None, deepest.copy(), {}))
    monkeypatch.setattr(latency, "paired_ratio", lambda dense, candidate, feed, rounds: 0.57)
    monkeypatch.setattr(latency, "run_explained", lambda sess, feed, what: [])  # the sessions here are stand-ins
    monkeypatch.setattr(logging.getLogger("onnxprune"), "propagate", True)  # a CLI test earlier may have stopped it
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        plan = latency.search_latency(None, model, 0.5, 2, lambda p: built.append(p) or "pruned")
    assert len(built) == 1 and plan.options["measured_latency_ratio"] == 0.57
    assert "missed" in caplog.text and "--depth" in caplog.text


def test_a_flat_latency_model_hands_the_aim_to_the_macs(monkeypatch):
    """orinet's float16 copy: the profile predicted 0.995 of the latency kept at every plan, so each aim
    gave the deepest plan, which measured 0.225 for a target of 0.6, and the search stopped there. When
    the repeated plan lands far under a target the model says is far over, the aim goes by MACs."""
    from types import SimpleNamespace

    from onnxprune.couple.plan import Plan

    width = 20
    costs = SimpleNamespace(total_macs=100, macs_after=lambda removed: 100 * (1 - removed.mean()))
    model = SimpleNamespace(kept=lambda removed: 0.995, costs=costs,
                            dep=SimpleNamespace(graph=SimpleNamespace(model="dense", input_shapes={})))

    def select(share):  # the first round(share * width) channels, at most 18 (a per-layer cap)
        removed = np.zeros(width, bool)
        removed[:min(int(round(share * width)), 18)] = True
        return Plan(None, removed, {})

    monkeypatch.setattr(latency, "session", lambda m, threads: m)
    monkeypatch.setattr(latency, "run_explained", lambda sess, feed, what: [])
    monkeypatch.setattr(latency, "synthetic_dataset", lambda s, shapes, samples: SimpleNamespace(batches=lambda n: iter([{}])))
    monkeypatch.setattr(latency, "paired_ratio", lambda dense, candidate, feed, rounds: 1 - candidate.removed.mean())
    plan = latency.search_latency(select, model, 0.6, 2, lambda p: p)
    assert plan.options["measured_latency_ratio"] == pytest.approx(0.6, abs=0.03)
