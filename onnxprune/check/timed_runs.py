"""Latency from the runs the evaluation makes anyway: when the dense and pruned models are run one at
a time, each fidelity run on a feed shaped like the latency feed (every sample of a model without a
dynamic batch axis) is timed and counts as a latency round, so a slow model is not run again just to
be timed. Only the rounds still missing are run on the latency feed itself."""

from __future__ import annotations

import time

import numpy as np

from onnxprune.check.bench import Timing


def _shapes(feed: dict) -> dict:
    return {k: np.shape(v) for k, v in feed.items()}


class TimedRuns:
    """A session whose runs on feeds of the latency feed's shapes are timed (in `seconds`); anything
    else (inputs, outputs, other runs) is the session's own."""

    def __init__(self, sess, feed: dict):
        self._sess, self._shapes, self.seconds = sess, _shapes(feed), []

    def run(self, names, feed):
        start = time.perf_counter()
        outputs = self._sess.run(names, feed)
        if _shapes(feed) == self._shapes:
            self.seconds.append(time.perf_counter() - start)
        return outputs

    def __getattr__(self, name):
        return getattr(self._sess, name)


def latency_with(sess, feed: dict, timed: TimedRuns, rounds: int) -> Timing:
    """p50/p90 over the runs `timed` saw plus as many runs on `feed` as `rounds` still needs."""
    seconds = list(timed.seconds)
    for _ in range(rounds - len(seconds)):
        start = time.perf_counter()
        sess.run(None, feed)
        seconds.append(time.perf_counter() - start)
    return Timing(float(np.median(seconds) * 1e3), float(np.percentile(seconds, 90) * 1e3), len(seconds))
