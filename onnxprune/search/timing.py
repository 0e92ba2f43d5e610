"""A search's latency: every candidate timed against the dense model in one interleaved, repeated pass.

Timing candidates one after another gives each its own stretch of the machine's weather: on a shared
machine a burst of load lands on one candidate's rounds and not on its neighbour's, and the same
model measured 0.53 in one search and 0.71 in another (docs/benchmarks.md, s8 idle re-run). Here each
round runs the dense model and every candidate once (the fastest of `repeat` back-to-back runs), in
an order shuffled per round (seeded), so a burst slows a round of all of them.

A candidate's `latency_ratio` is its fastest time over the dense model's fastest time, over all
rounds: other processes only ever add time, so the fastest run is the one least disturbed, and on
re-timings of the same 16 NudeNet candidates at a load of 9-10 on 2 cores it moved less (median
0.020) than the median of per-round ratios (0.053), and gave the same front in each of three passes
where the median did not (numbers in docs/benchmarks.md, s9-lat). The median of the per-round ratios
is kept too (`latency_ratio_median`): the typical latency under the load of the moment. The noise
of a ratio is half the gap between the ratios of the odd and of the even rounds (each from half
the data, so their gap is about twice the standard error of the whole); its median over the
candidates is the pass's noise, which sets the front's tie width (front.py).
"""

from __future__ import annotations

import time

import numpy as np


def time_rounds(sessions: list, feed: dict, rounds: int = 20, repeat: int = 2, warmup: int = 3,
                seed: int = 0) -> np.ndarray:
    """Seconds, (rounds, sessions): each round runs every session once (the fastest of `repeat`
    back-to-back runs) in a seeded random order."""
    order = np.random.default_rng(seed)
    for _ in range(warmup):
        for s in sessions:
            s.run(None, feed)
    times = np.zeros((rounds, len(sessions)))
    for r in range(rounds):
        for i in order.permutation(len(sessions)):
            times[r, i] = _fastest(sessions[i], feed, repeat)
    return times


def summarize(times: np.ndarray) -> list[dict]:
    """Per session after the first (the dense model): `latency_ratio` (fastest over fastest),
    `latency_noise` (its standard error, from odd against even rounds) and `latency_ratio_median`
    (median of the per-round ratios)."""
    fastest = _fastest_ratio(times)
    if len(times) >= 2:
        noise = np.abs(_fastest_ratio(times[0::2]) - _fastest_ratio(times[1::2])) / 2
    else:
        noise = np.zeros_like(fastest)
    median = np.median(times[:, 1:] / times[:, :1], axis=0)
    return [{"latency_ratio": round(float(f), 4), "latency_noise": round(float(n), 4),
             "latency_ratio_median": round(float(m), 4)} for f, n, m in zip(fastest, noise, median)]


def pass_noise(points: list[dict]) -> float:
    """The timing pass's noise: the median of its candidates' `latency_noise` (0 if none has one)."""
    values = [p["latency_noise"] for p in points if "latency_noise" in p]
    return float(np.median(values)) if values else 0.0


def _fastest_ratio(times: np.ndarray) -> np.ndarray:
    return times[:, 1:].min(axis=0) / times[:, 0].min()


def _fastest(s, feed: dict, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        s.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return best
