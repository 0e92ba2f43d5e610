"""A latency target's allocation is chosen on the latency model: the global ranking by time per MAC,
unless uniform shares of the same scores keep clearly more MACs at the target's predicted latency
(select/latency.py, most_macs). Stub plans and a stub model with two groups of known time per MAC
make the expected choice exact; one real prune shows the choice in the plan's options."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import FIXTURES
from onnxprune.api import prune
from onnxprune.select.latency import SWITCH_GAIN, most_macs

# channels 0-49: group A, 1 MAC and 0.2 time units each; 50-99: group B, 1 MAC and 1.0 time unit each
TIME = np.r_[np.full(50, 0.2), np.full(50, 1.0)]


class StubModel:
    costs = SimpleNamespace(total_macs=100, macs_after=lambda removed: float((~removed).sum()))

    def kept(self, removed: np.ndarray) -> float:
        return float(TIME[~removed].sum() / TIME.sum())


def in_order(order: np.ndarray):
    """select(share): the first share of `order`'s channels removed."""
    def select(share: float):
        removed = np.zeros(100, dtype=bool)
        removed[order[: int(round(share * 100))]] = True
        return SimpleNamespace(removed=removed, options={})
    return select


A_FIRST, B_FIRST = in_order(np.arange(100)), in_order(np.r_[np.arange(50, 100), np.arange(50)])
UNIFORM = in_order(np.ravel(np.c_[np.arange(50), np.arange(50, 100)]))  # A and B alternately


def test_uniform_replaces_a_ranking_that_cuts_where_time_falls_least():
    name, select, kept = most_macs({"ranking": A_FIRST, "uniform": UNIFORM}, StubModel(), 0.5)
    assert name == "uniform" and select is UNIFORM
    assert kept == {"ranking": pytest.approx(0.30, abs=0.02), "uniform": pytest.approx(0.50, abs=0.02)}


def test_a_ranking_that_cuts_where_the_time_is_stays():
    name, _, kept = most_macs({"ranking": B_FIRST, "uniform": UNIFORM}, StubModel(), 0.5)
    assert name == "ranking" and kept["ranking"] == pytest.approx(0.70, abs=0.02)


def test_a_small_gain_does_not_switch():
    name, _, kept = most_macs({"ranking": UNIFORM, "same": UNIFORM}, StubModel(), 0.5)
    assert name == "ranking" and kept["same"] < SWITCH_GAIN * kept["ranking"]


def test_a_latency_target_reports_its_allocation():
    result = prune(str(FIXTURES / "digits_cnn.onnx"), target_latency=0.8, bench_rounds=0, threads=1)
    options = result.report["plan"]["latency"]
    assert options["allocation"] in ("latency ranking", "uniform")
    assert set(options["allocation_macs_kept"]) == {"latency ranking", "uniform"}
