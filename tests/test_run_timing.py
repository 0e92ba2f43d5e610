"""The shared timing primitive (check/run_timing.py) that the latency landing (select/latency.py) and
the search's pass (search/timing.py) both use. No real timing: a fake clock and sessions whose runs
take given durations."""

from __future__ import annotations

import numpy as np

from onnxprune.check import run_timing
from onnxprune.select import latency
from onnxprune.search import timing


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A session whose successive runs advance the clock by the given durations."""

    def __init__(self, clock: Clock, durations: list[float]):
        self.clock, self.durations, self.runs = clock, list(durations), 0

    def run(self, outputs, feed):
        self.clock.now += self.durations[self.runs % len(self.durations)]
        self.runs += 1


def test_back_to_back_times_each_run_and_fastest_takes_the_least(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(run_timing.time, "perf_counter", clock)
    sess = Scripted(clock, [3.0, 1.0, 2.0])
    assert list(run_timing.back_to_back(sess, {}, 3)) == [3.0, 1.0, 2.0]
    assert run_timing.fastest(sess, {}, 3) == 1.0 and sess.runs == 6


def test_the_landing_and_the_search_share_one_primitive(monkeypatch):
    assert timing.fastest is run_timing.fastest
    seen = []

    def recording(sess, feed, repeat):
        seen.append(repeat)
        return np.full(repeat, 2.0 if sess.name == "dense" else 1.0)

    class Quiet:
        def __init__(self, name):
            self.name = name

        def run(self, outputs, feed):
            pass

    monkeypatch.setattr(latency, "back_to_back", recording)
    assert latency.paired_ratio(Quiet("dense"), Quiet("candidate"), {}, rounds=4, repeat=3) == 0.5
    assert seen == [3] * 8  # every side of every round through the shared primitive


def test_warm_up_runs_every_session_each_round():
    clock = Clock()
    a, b = Scripted(clock, [1.0]), Scripted(clock, [1.0])
    run_timing.warm_up([a, b], {}, 5)
    assert a.runs == b.runs == 5
