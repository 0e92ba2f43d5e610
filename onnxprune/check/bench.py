"""Measured ONNX Runtime latency, throughput and size (static counts live in graph/cost.py).

Latency of several models is measured interleaved (A, B, A, B, ...) in one process, because this
kind of machine is shared and noisy; ratios are medians of per-round ratios, not ratios of medians.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune import progress
from onnxprune.errors import BadInputError
from onnxprune.graph.cost import count_params, layer_macs
from onnxprune.graph.model_graph import ModelGraph

log = logging.getLogger(__name__)


@dataclass
class Timing:
    p50_ms: float
    p90_ms: float
    samples: int


def measure_latency(sessions: list, feed: dict, rounds: int = 30, warmup: int = 3) -> tuple[list[Timing], list[float]]:
    """Interleaved latency of each session on `feed`; also the median per-round ratio to the first."""
    return measure_latency_feeds(sessions, [feed] * len(sessions), rounds, warmup)


LATENCY_BUDGET_S = 2.0  # timed rounds of a report: a slow model (VGG-19, 0.35 s a run) gets what fits in this
MIN_ROUNDS = 5


def measure_latency_within(sessions: list, feed: dict, rounds: int = 30, warmup: int = 3) -> tuple[list[Timing], list[float]]:
    """`measure_latency` with at most `rounds` rounds: the first warm-up round is timed, and a slow
    model gets only the rounds that fit in LATENCY_BUDGET_S (at least MIN_ROUNDS) after that one
    warm-up, so the report's latency does not cost more runs than the rest of the evaluation."""
    rounds, warmup = fitted_rounds(sessions, feed, rounds, warmup)
    return measure_latency(sessions, feed, rounds=rounds, warmup=warmup)


def fitted_rounds(sessions: list, feed: dict, rounds: int, warmup: int) -> tuple[int, int]:
    """Run one warm-up round, timed: (rounds, warm-up runs still to do) within LATENCY_BUDGET_S."""
    start = time.perf_counter()
    for s in sessions:
        s.run(None, feed)
    fit = max(MIN_ROUNDS, int(LATENCY_BUDGET_S / max(time.perf_counter() - start, 1e-9)))
    return (rounds, max(warmup - 1, 0)) if fit >= rounds else (fit, 0)  # a slow model is warm after one run


def measure_latency_feeds(sessions: list, feeds: list[dict], rounds: int = 30, warmup: int = 3,
                          desc: str | None = None) -> tuple[list[Timing], list[float]]:
    """Like `measure_latency`, with one feed per session (models whose inputs differ).

    Each round runs every session once (A, B, A, B, ...) after `warmup` untimed rounds; `desc`
    names a progress bar (shown only on a terminal, see progress.py).
    """
    if rounds < 1:
        raise BadInputError(f"latency needs at least one round, got {rounds}")
    for _ in range(warmup):
        for s, feed in zip(sessions, feeds):
            s.run(None, feed)
    times = np.zeros((rounds, len(sessions)))
    steps = range(rounds) if desc is None else progress.bar(range(rounds), desc, total=rounds, unit="round")
    for r in steps:
        for i, (s, feed) in enumerate(zip(sessions, feeds)):
            start = time.perf_counter()
            s.run(None, feed)
            times[r, i] = time.perf_counter() - start
    timings = [Timing(float(np.median(times[:, i]) * 1e3), float(np.percentile(times[:, i], 90) * 1e3), rounds)
               for i in range(len(sessions))]
    ratios = [float(np.median(times[:, i] / times[:, 0])) for i in range(len(sessions))]
    return timings, ratios


def model_size(model: onnx.ModelProto) -> int:
    return model.ByteSize()


def file_size(path: str | os.PathLike) -> int:
    """Bytes on disk: the .onnx file plus every external data file it refers to."""
    path = Path(path)
    total = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    locations = {e.value for t in _tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL
                 for e in t.external_data if e.key == "location"}
    for loc in locations:
        data = path.parent / loc
        if data.exists():
            total += data.stat().st_size
    return total


def _tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


BENCH_SCHEMA = "onnxprune.bench/1"


def run_bench(paths: list[str | os.PathLike], data: str | os.PathLike | None = None, batch: int = 1,
              threads: int = 0, rounds: int = 30, warmup: int = 3,
              input_shapes: dict[str, tuple[int, ...]] | None = None, memory: bool = True,
              energy: bool = True) -> dict:
    """Cost and speed of each model: params, MACs (total and per layer), file size, interleaved
    ONNX Runtime latency p50/p90 with the paired ratio to the first model, throughput at `batch`,
    peak memory (memprobe.py) and energy per inference (energy.py, where measurable)."""
    from onnxprune.load.data import load_npz
    from onnxprune.check.energy import measure_energy
    from onnxprune.check.memprobe import measure_peak_memory
    from onnxprune.load.model import load_model
    from onnxprune.load.runtime import session

    if batch < 1:
        raise BadInputError(f"--batch must be a positive integer, got {batch}")
    if not paths:
        raise BadInputError("bench needs at least one model")
    given = dict(input_shapes or {})
    models, sessions, feeds, entries, used = [], [], [], [], set()
    for path in paths:
        model = load_model(path, supported_only=False)  # measuring a quantized model is fine
        mine = {k: v for k, v in given.items() if k in _input_names(model)}
        used |= set(mine)
        sess = session(model, threads)
        feed, unit_shapes = _bench_feed(model, sess, path, mine, batch, data, load_npz)
        g = ModelGraph(model, unit_shapes)
        layers = layer_macs(g)
        entries.append({"path": str(path), "params": count_params(g), "macs": int(sum(r["macs"] for r in layers)),
                        "size_bytes": file_size(path), "inputs": {k: list(v.shape) for k, v in feed.items()},
                        "layers": layers})
        models.append(model)
        sessions.append(sess)
        feeds.append(feed)
    unknown = sorted(set(given) - used)
    if unknown:
        raise BadInputError(f"--input-shape names unknown input(s) {unknown}; no benchmarked model has them")
    log.info("timing %d model(s): %d warm-up and %d interleaved rounds at batch %d", len(paths), warmup, rounds, batch)
    timings, ratios = measure_latency_feeds(sessions, feeds, rounds, warmup, desc="benchmark")
    for entry, path, sess, feed, t, ratio in zip(entries, paths, sessions, feeds, timings, ratios):
        entry["latency_ms"] = {"p50": round(t.p50_ms, 4), "p90": round(t.p90_ms, 4)}
        entry["latency_ratio"] = round(ratio, 4)
        entry["throughput_per_s"] = round(batch * 1000.0 / t.p50_ms, 2) if t.p50_ms > 0 else None
        entry["memory"] = measure_peak_memory(str(path), feed, threads) if memory else {"skipped": True}
        entry["energy"] = (measure_energy(lambda: sess.run(None, feed)) if energy
                           else {"measurable": False, "reason": "skipped (--no-energy)"})
    return {"schema": BENCH_SCHEMA, "batch": batch, "threads": threads, "rounds": rounds, "warmup": warmup,
            "data": "given" if data is not None else "synthetic", "models": entries}


def _input_names(model: onnx.ModelProto) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _bench_feed(model, sess, path, given, batch: int, data, load_npz) -> tuple[dict, dict]:
    """The feed at `batch` and the per-sample input shapes that MACs are counted at."""
    from onnxprune.load.data import synthetic_feed
    from onnxprune.graph.model_graph import resolve_input_shapes
    from onnxprune.load.runtime import batchable

    shapes = resolve_input_shapes(model, given)
    dynamic_batch = batchable(sess)
    if batch > 1 and not dynamic_batch:
        raise BadInputError(f"{path}: an input has a fixed batch axis; --batch {batch} needs a dynamic one")
    if data is not None:
        samples = load_npz(data, {k: len(v) for k, v in shapes.items()})
        from onnxprune.load.fit import check_fits
        check_fits(model, samples, data)
        if len(samples) < batch:
            raise BadInputError(f"{data}: holds {len(samples)} samples, fewer than --batch {batch}")
        feed = next(samples.take(batch).batches(batch, dynamic_batch))
        return feed, samples.sample_shapes()
    unit = {k: ((1,) + tuple(v[1:]) if dynamic_batch and v else tuple(v)) for k, v in shapes.items()}
    at_batch = {k: ((batch,) + tuple(v[1:]) if dynamic_batch and v else tuple(v)) for k, v in shapes.items()}
    return synthetic_feed(sess, at_batch), unit
