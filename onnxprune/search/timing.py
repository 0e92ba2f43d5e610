"""A search's latency: every candidate timed against the dense model in one interleaved, repeated pass.

Timing candidates one after another gives each its own stretch of the machine's weather: on a shared
machine a burst of load lands on one candidate's rounds and not on its neighbour's, and the same
model measured 0.53 in one search and 0.71 in another (docs/benchmarks.md, s8 idle re-run). Here each
round runs the dense model and every candidate once (the fastest of `repeat` back-to-back runs), in
an order shuffled per round (seeded), so a burst slows a round of all of them.

A candidate's `latency_ratio` is the median over rounds of its time over the dense model's time in
the same round; its `latency_noise` is the standard error of that median, from the spread of the
rounds (1.2533 x 1.4826 x MAD / sqrt(rounds)), and the median of that over the candidates is the
pass's noise, which sets the front's tie width (front.py). A pass whose noise is above NOISE_GOAL
goes on for more rounds (up to MOST_ROUNDS x as many): under load it takes longer rather than
hand the front noisier ratios. The ratio of the fastest runs is kept too
(`latency_ratio_fastest`): it was tried as the estimator and dropped, because under bursty load one
session's fastest run depends on whether it happened to meet a quiet moment (NudeNet at a load of 9:
a 0.4-of-the-MACs candidate at 0.30 by its fastest run, 0.55 by the median; docs/benchmarks.md, s9-lat).
"""

from __future__ import annotations

import numpy as np

from onnxprune.check.run_timing import fastest, warm_up

MEDIAN_SE = 1.2533 * 1.4826  # standard error of a median, in units of MAD / sqrt(n), for normal noise


def time_rounds(sessions: list, feed: dict, rounds: int = 20, repeat: int = 2, warmup: int = 3,
                seed: int = 0) -> np.ndarray:
    """Seconds, (rounds, sessions): each round runs every session once (the fastest of `repeat`
    back-to-back runs) in a seeded random order."""
    order = np.random.default_rng(seed)
    warm_up(sessions, feed, warmup)
    times = np.zeros((rounds, len(sessions)))
    for r in range(rounds):
        for i in order.permutation(len(sessions)):
            times[r, i] = fastest(sessions[i], feed, repeat)
    return times


NOISE_GOAL = 0.01  # standard error of a ratio that a pass aims at (1% of the dense latency) ...
MOST_ROUNDS = 4  # ... with at most this many times the rounds asked for (noise falls as 1/sqrt(rounds))


def time_until_quiet(sessions: list, feed: dict, rounds: int = 40, goal: float = NOISE_GOAL,
                     most: int = MOST_ROUNDS) -> np.ndarray:
    """`time_rounds`, then `rounds` more at a time while the pass's noise (median standard error of
    the candidates' ratios) is above `goal`, up to `most` x `rounds` in all: on a loaded machine the
    pass times longer instead of handing the front noisier ratios."""
    times = time_rounds(sessions, feed, rounds)
    batch = 1
    while batch < most and pass_noise(summarize(times)) > goal:
        times = np.vstack([times, time_rounds(sessions, feed, rounds, warmup=0, seed=batch)])
        batch += 1
    return times


def summarize(times: np.ndarray) -> list[dict]:
    """Per session after the first (the dense model): `latency_ratio` (median of per-round ratios),
    `latency_noise` (its standard error), `latency_ratio_fastest` (fastest over fastest) and
    `latency_rounds`."""
    ratios = times[:, 1:] / times[:, :1]
    median = np.median(ratios, axis=0)
    noise = MEDIAN_SE * np.median(np.abs(ratios - median), axis=0) / np.sqrt(len(times))
    fastest = times[:, 1:].min(axis=0) / times[:, 0].min()
    return [{"latency_ratio": round(float(m), 4), "latency_noise": round(float(n), 4),
             "latency_ratio_fastest": round(float(f), 4), "latency_rounds": len(times)}
            for m, n, f in zip(median, noise, fastest)]


def pass_noise(points: list[dict]) -> float:
    """The timing pass's noise: the median of its candidates' `latency_noise` (0 if none has one)."""
    values = [p["latency_noise"] for p in points if "latency_noise" in p]
    return float(np.median(values)) if values else 0.0
