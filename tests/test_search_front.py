"""The search's front under timing noise (search/front.py) and its one-pass timing (search/timing.py):
latencies within the measured noise tie, and a tie goes to the better quality, so the front does not
change when noise within that width reorders the timed latencies."""

from __future__ import annotations

import time

import numpy as np

from onnxprune.search.front import TIE_FLOOR, dominates, pareto_front, tie_width
from onnxprune.search.timing import MEDIAN_SE, pass_noise, summarize, time_rounds

# (latency, quality): two int8-like points 0.01 apart, a slower better one, a fast poor one, a dominated one
TRUE = {"a": (0.42, 0.9948), "b": (0.53, 0.9978), "c": (0.54, 0.9989), "d": (0.85, 0.9996), "e": (0.70, 0.9977)}


def points(latency: dict) -> list[dict]:
    return [{"id": k, "latency_ratio": latency[k], "quality": TRUE[k][1]} for k in TRUE]


def ids(front: list[dict]) -> list[str]:
    return [p["id"] for p in front]


def test_without_a_tie_width_the_front_is_the_strict_one_and_swaps_with_the_timing():
    exact = {k: v[0] for k, v in TRUE.items()}
    assert ids(pareto_front(points(exact))) == ["a", "b", "c", "d"]
    swapped = exact | {"b": 0.545}  # b timed 0.015 slower: within noise, but now c beats it
    assert ids(pareto_front(points(swapped))) == ["a", "c", "d"]


def test_latencies_within_the_noise_tie_and_the_better_quality_wins():
    rng = np.random.default_rng(0)
    strict, tied = set(), set()
    tie = tie_width(0.02)  # 1 x sqrt(2) x 0.02 = 0.028
    for _ in range(200):  # re-timings: each latency moves by up to 0.008
        timed = {k: v[0] + rng.uniform(-0.008, 0.008) for k, v in TRUE.items()}
        strict.add(tuple(ids(pareto_front(points(timed)))))
        tied.add(tuple(ids(pareto_front(points(timed), tie=tie))))
    assert strict == {("a", "b", "c", "d"), ("a", "c", "d")}  # b in or out as the timing falls
    assert tied == {("a", "c", "d")}  # b and c at most 0.026 apart: a tie, and c is the better


def test_a_point_measurably_faster_stays_on_the_front():
    by = {p["id"]: p for p in points({k: v[0] for k, v in TRUE.items()})}
    tie = tie_width(0.02)
    assert np.isclose(tie, 0.02 * np.sqrt(2))
    assert not dominates(by["c"], by["a"], tie)  # 0.12 faster: a real difference, a keeps its place
    assert dominates(by["c"], by["b"], tie) and not dominates(by["b"], by["c"], tie)
    assert dominates(by["b"], by["e"], tie)  # faster and better: dominated whatever the noise


def test_the_tie_width_has_a_floor_and_twins_keep_the_first():
    assert tie_width(0.0) == TIE_FLOOR
    tiny = [{"id": i, "latency_ratio": 0.5 + 0.001 * i, "quality": 0.9} for i in range(3)]
    assert ids(pareto_front(tiny, tie=tie_width(0.0))) == [0]
    assert ids(pareto_front(tiny)) == [0]  # without a tie width: the fastest of equal qualities


class Busy:
    """A stand-in session whose run takes a fixed time (and counts its runs)."""

    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def run(self, _outputs, _feed):
        self.calls += 1
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass


def test_one_pass_times_every_session_in_every_round():
    sessions = [Busy(0.002), Busy(0.001), Busy(0.003)]
    times = time_rounds(sessions, {}, rounds=4, repeat=2, warmup=1)
    assert times.shape == (4, 3) and [s.calls for s in sessions] == [9, 9, 9]
    ratios = [t["latency_ratio"] for t in summarize(times)]
    assert abs(ratios[0] - 0.5) < 0.15 and abs(ratios[1] - 1.5) < 0.3


def test_ratios_are_medians_of_per_round_ratios_with_their_standard_error():
    # dense 10 ms with one slow round; candidate 5, 6, 5, 7 ms
    times = np.array([[0.010, 0.005], [0.030, 0.006], [0.010, 0.005], [0.011, 0.007]])
    (t,) = summarize(times)
    ratios = times[:, 1] / times[:, 0]
    assert t["latency_ratio"] == round(float(np.median(ratios)), 4)
    mad = np.median(np.abs(ratios - np.median(ratios)))
    assert t["latency_noise"] == round(float(MEDIAN_SE * mad / 2), 4)  # sqrt(4 rounds) = 2
    assert t["latency_ratio_fastest"] == 0.5  # fastest over fastest: the slow round of dense does not count
    assert pass_noise([{"latency_noise": 0.01}, {"latency_noise": 0.03}, {}]) == 0.02


def test_the_executor_is_closed_before_the_timing_pass(tmp_path, monkeypatch):
    from onnxprune.search import run as search_run
    from onnxprune.search.executors import LocalExecutor
    from test_search import CALIB, DIGITS, fake_evaluate

    events = []

    class Recording(LocalExecutor):
        def close(self):
            events.append("close")

    def timing(model, points, folder, rounds, input_shapes):
        events.append("timing")
        for p in points:
            p.update(latency_ratio=0.5, latency_noise=0.02)

    monkeypatch.setattr(search_run, "_measure_latency", timing)
    done = search_run.search(DIGITS, CALIB, tmp_path / "s", budget=2, workers=Recording(1), evaluate=fake_evaluate)
    assert events == ["close", "timing"]
    assert done["timing_noise"] == 0.02 and done["tie_width"] == round(tie_width(0.02), 4)


def test_a_noisy_pass_times_more_rounds_up_to_a_limit(monkeypatch):
    from onnxprune.search import timing

    calls = []

    def fake_rounds(sessions, feed, rounds, repeat=2, warmup=3, seed=0):
        calls.append(rounds)
        noisy = np.random.default_rng(seed).uniform(0.9, 1.1, (rounds, 2))  # ratio noise about 0.1
        return np.column_stack([np.ones(rounds) * 0.01, 0.005 * noisy[:, 0]])

    monkeypatch.setattr(timing, "time_rounds", fake_rounds)
    assert timing.time_until_quiet([None, None], {}, rounds=10, goal=0.5).shape == (10, 2)  # quiet: one batch
    calls.clear()
    assert timing.time_until_quiet([None, None], {}, rounds=10, goal=1e-6, most=3).shape == (30, 2)
    assert calls == [10, 10, 10]
