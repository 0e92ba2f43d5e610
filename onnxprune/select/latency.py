"""Selection on measured time: bisect the share removed until ONNX Runtime latency, measured
interleaved with the dense model, lands nearest the target fraction."""

from __future__ import annotations

from typing import Callable

import onnx

from onnxprune.check.bench import measure_latency
from onnxprune.couple.dependency import Dependency
from onnxprune.couple.plan import Plan
from onnxprune.load.data import synthetic_dataset
from onnxprune.load.runtime import session


def search_latency(select: Callable[[float], Plan], dep: Dependency, working: onnx.ModelProto, target: float,
                   threads: int, build: Callable[[Plan], onnx.ModelProto], steps: int = 7) -> Plan:
    """The plan (from `select(share)`) whose model (`build(plan)`) runs nearest `target` x dense latency."""
    dense = session(working, threads)
    feed = next(synthetic_dataset(dense, dep.graph.input_shapes, samples=1).batches(1))
    lo, hi, best, best_gap = 0.0, 0.95, None, float("inf")
    for _ in range(steps):
        mid = (lo + hi) / 2
        plan = select(mid)
        candidate = session(build(plan), threads)
        _, ratios = measure_latency([dense, candidate], feed, rounds=30, warmup=10)  # new sessions start slow
        measured = ratios[1]
        if abs(measured - target) < best_gap:
            best, best_gap = plan, abs(measured - target)
            best.options["measured_latency_ratio"] = measured
        lo, hi = (mid, hi) if measured > target else (lo, mid)
    best.options["target_latency"] = target
    return best
