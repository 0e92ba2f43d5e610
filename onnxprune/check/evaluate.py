"""Evaluation against the dense model: cost before and after, fidelity, latency. Large models are
run one at a time (the dense outputs recorded, its session released) so two copies of the weights
never sit in ONNX Runtime together."""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from onnxprune.check.bench import Timing, fitted_rounds, measure_latency_within
from onnxprune.check.fidelity import run_explained
from onnxprune.check.replay import REPLAY_SAMPLES, Recorded
from onnxprune.check.timed_runs import TimedRuns, latency_with
from onnxprune.check.validate import compare, load_in_runtime
from onnxprune.graph.cost import count_macs, count_params
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import Dataset, synthetic_dataset
from onnxprune.load.fold import fold_constants
from onnxprune.load.parked import Parked
from onnxprune.load.runtime import session
from onnxprune.load.spill import model_bytes


@dataclass
class Reference:
    """The dense model's outputs on the evaluation data, recorded once (and its latency), so the
    dense session is gone before the pruned model is built or run."""

    outputs: Recorded
    data: Dataset
    data_kind: str
    feed: dict | None
    timing: Timing | None


def record_dense(dense: onnx.ModelProto | Parked, input_shapes, data: Dataset | None, bench_rounds: int = 20,
                 threads: int = 0) -> Reference:
    """Run the dense model once over `data` (synthetic inputs if None) and release its session."""
    sess = session(dense, threads)
    data_kind = "given" if data is not None else "synthetic"
    big = stored_params(dense) > BIG_PARAMS
    if data is None:
        data = synthetic_dataset(sess, input_shapes, samples=BIG_SAMPLES if big else 8)
    bench_rounds = min(bench_rounds, BIG_ROUNDS) if big else bench_rounds
    feed = next(data.take(1).batches(1)) if bench_rounds > 0 else None
    if feed is None:
        return Reference(Recorded(sess, data), data, data_kind, None, None)
    run_explained(sess, feed, "dense")  # a failure is the inputs' (exit 2), not a crash of the timing
    rounds, warmup = fitted_rounds([sess], feed, bench_rounds, 1 if big else 3)
    for _ in range(warmup):
        sess.run(None, feed)
    timed = TimedRuns(sess, feed)  # fidelity runs shaped like the feed are latency rounds too
    outputs = Recorded(timed, data)
    return Reference(outputs, data, data_kind, feed, latency_with(sess, feed, timed, rounds))


def evaluate(dense: onnx.ModelProto, pruned: onnx.ModelProto, input_shapes, data: Dataset | None,
             bench_rounds: int = 20, threads: int = 0, dense_graph: ModelGraph | None = None,
             dense_bytes: int | None = None, reference: Reference | None = None) -> dict:
    """Before/after cost, fidelity on `data` (synthetic inputs if None) and interleaved latency.
    `dense_graph` (the folded dense model's graph) saves analysing the dense model again;
    `dense_bytes` is the input's size if `dense` was folded in place. Large models are run one at
    a time (see `one_at_a_time`; `reference` if the caller recorded the dense run already): the
    latency is then two separate measurements, not interleaved pairs."""
    before, after = costs(dense, pruned, input_shapes, dense_graph, dense_bytes)
    if reference is None and one_at_a_time(before["params"], data, len(dense.graph.node)):
        reference = record_dense(dense, input_shapes, data, bench_rounds, threads)
    report = run_checks(dense, pruned, input_shapes, data, bench_rounds, threads, reference)
    report["before"], report["after"] = {**before, **report["before"]}, {**after, **report["after"]}
    return report


def costs(dense: onnx.ModelProto, pruned: onnx.ModelProto, input_shapes, dense_graph: ModelGraph | None = None,
          dense_bytes: int | None = None) -> tuple[dict, dict]:
    """Params, MACs and size before and after (see `evaluate` for `dense_graph` and `dense_bytes`)."""
    dense_graph = dense_graph or ModelGraph(fold_constants(dense), input_shapes)  # run-time weights count
    return model_costs(dense, input_shapes, dense_graph, dense_bytes), model_costs(pruned, input_shapes)


def model_costs(model: onnx.ModelProto, input_shapes, graph: ModelGraph | None = None, size: int | None = None) -> dict:
    """Params, MACs (counted on `graph`, else on a graph of `model` built here) and size in bytes."""
    graph = graph or ModelGraph(model, input_shapes)
    return {"params": count_params(graph), "macs": count_macs(graph), "size_bytes": size or model_bytes(model)}


def run_checks(dense, pruned, input_shapes, data: Dataset | None, bench_rounds: int = 20, threads: int = 0,
               reference: Reference | None = None) -> dict:
    """The report's run-time parts: fidelity, latency (in "before" and "after") and validation. With a
    `reference` the dense model is not run again (`dense` may then be None); either model may be
    parked (load/parked.py)."""
    if reference is not None:
        data, data_kind, feed = reference.data, reference.data_kind, reference.feed
        pruned_sess = timed = load_in_runtime(pruned, threads)
        if feed:
            rounds = reference.timing.samples  # as many as the dense model had (fewer for big models)
            run_explained(pruned_sess, feed, "pruned")
            for _ in range(1 if rounds < 20 else 3):
                pruned_sess.run(None, feed)
            timed = TimedRuns(pruned_sess, feed)
        fidelity = compare(reference.outputs, timed, data)
        if feed:
            pruned_timing = latency_with(pruned_sess, feed, timed, rounds)
            timings = [reference.timing, pruned_timing]
            ratios = [1.0, pruned_timing.p50_ms / reference.timing.p50_ms]
    else:
        dense_sess = session(dense, threads)
        data_kind = "given" if data is not None else "synthetic"
        if data is None:
            data = synthetic_dataset(dense_sess, input_shapes, samples=8)
        feed = next(data.take(1).batches(1)) if bench_rounds > 0 else None
        pruned_sess = load_in_runtime(pruned, threads)
        if feed:  # timed before the batched fidelity runs, which leave the sessions' memory unevenly grown
            for sess, what in ((dense_sess, "dense"), (pruned_sess, "pruned")):  # failures said as compare says them
                run_explained(sess, feed, what)
            timings, ratios = measure_latency_within([dense_sess, pruned_sess], feed, rounds=bench_rounds)
        fidelity = compare(dense_sess, pruned_sess, data)
    report = {"before": {}, "after": {},
              "fidelity": {"data": data_kind, "samples": len(data), **fidelity.as_dict()},
              "validation": {"checker": "passed", "onnxruntime": "passed", "interface": "unchanged"}}
    if feed:
        report["before"]["latency_ms"] = round(timings[0].p50_ms, 4)
        report["after"]["latency_ms"] = round(timings[1].p50_ms, 4)
        report["latency_ratio"] = round(ratios[1], 4)
        # one model at a time: the dense model was timed before pruning, under whatever load the machine had then
        report["latency_timing"] = "separate" if reference is not None else "paired"
    return report


BIG_PARAMS = 256_000_000  # 1 GB of float32 weights: each run takes seconds, so few samples and rounds
BIG_SAMPLES, BIG_ROUNDS = 2, 3


def stored_params(model: onnx.ModelProto | Parked) -> int:
    """Elements of the model's initializers, from their shapes (nothing is read)."""
    if isinstance(model, Parked):
        return model.params
    return sum(math.prod(t.dims) for t in model.graph.initializer)


ONE_AT_A_TIME_PARAMS = 64_000_000  # 256 MB of float32 weights: above it, never two models in ORT at once
# a session costs 6-9 KB per node whatever the weights (a 200,000-node chain: 1.8 GB), so big graphs too
ONE_AT_A_TIME_NODES = 20_000


def one_at_a_time(dense_params: int, data: Dataset | None, nodes: int = 0) -> bool:
    """Whether to record the dense outputs and release its session before the pruned one is built."""
    big = dense_params > ONE_AT_A_TIME_PARAMS or nodes > ONE_AT_A_TIME_NODES
    return big and (data is None or len(data) <= REPLAY_SAMPLES)
