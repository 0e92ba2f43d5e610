"""The one timing primitive every paired latency measurement shares: a session run a few times back to
back, each run's wall-clock seconds. The landing of a latency target (select/latency.py) and a search's
timing pass (search/timing.py) both take the fastest of those runs per side and round; keeping the
primitive here (below both) makes them time a run the same way."""

from __future__ import annotations

import time

import numpy as np


def back_to_back(sess, feed: dict, repeat: int) -> np.ndarray:
    """Seconds of each of `repeat` back-to-back runs of session `sess` on `feed`."""
    seconds = np.empty(repeat)
    for k in range(repeat):
        start = time.perf_counter()
        sess.run(None, feed)
        seconds[k] = time.perf_counter() - start
    return seconds


def fastest(sess, feed: dict, repeat: int) -> float:
    """Seconds of the fastest of `repeat` back-to-back runs: other work only ever adds time."""
    return float(back_to_back(sess, feed, repeat).min())


def warm_up(sessions: list, feed: dict, rounds: int) -> None:
    """`rounds` untimed runs of every session in turn: new sessions start slow (allocations, caches)."""
    for _ in range(rounds):
        for s in sessions:
            s.run(None, feed)
