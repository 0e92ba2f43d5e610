"""The library entry point: `prune(model_or_path, ...)` returns the model, the plan and the report."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import onnx

from .bench import count_macs, count_params, measure_latency, model_size
from .data import Dataset, load_npz, synthetic_dataset
from .dependency import Dependency, build_dependency
from .errors import BadInputError
from .graph import ModelGraph
from .importance import score
from .model import check_supported, load_model
from .plan import Plan, select_uniform
from .rewrite import apply_plan
from .runtime import session
from .validate import check_valid, compare, load_in_runtime

REPORT_SCHEMA = "onnxprune.report/1"
DEFAULT_ROUND_TO = 8


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    report: dict = field(default_factory=dict)


def as_model(model_or_path: onnx.ModelProto | str | os.PathLike) -> tuple[onnx.ModelProto, str]:
    if isinstance(model_or_path, onnx.ModelProto):
        check_supported(model_or_path)
        return model_or_path, "<in-memory model>"
    return load_model(model_or_path), str(model_or_path)


def as_dataset(data: Dataset | str | os.PathLike | None, g: ModelGraph) -> Dataset | None:
    if data is None or isinstance(data, Dataset):
        return data
    ranks = {name: len(g.input_shapes[name]) for name in g.inputs}
    return load_npz(data, ranks)


def analyse(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Dependency:
    """The model's coupled channel groups and barriers."""
    return build_dependency(ModelGraph(model, input_shapes))


def prune(model_or_path: onnx.ModelProto | str | os.PathLike, ratio: float, *,
          calib: Dataset | str | os.PathLike | None = None, round_to: int = DEFAULT_ROUND_TO,
          criterion: str = "l2", input_shapes: Mapping[str, tuple[int, ...]] | None = None,
          bench_rounds: int = 20, threads: int = 0) -> PruneResult:
    """Remove `ratio` of the channels of every prunable group, then validate and measure the result.

    Raises BadInputError for unusable input and ValidationError if the pruned model is invalid.
    """
    if not 0.0 < float(ratio) < 1.0:
        raise BadInputError(f"ratio must be strictly between 0 and 1, got {ratio}")
    model, source = as_model(model_or_path)
    first = ModelGraph(model, input_shapes)
    data = as_dataset(calib, first)
    if data is not None and input_shapes is None:
        first = ModelGraph(model, data.sample_shapes())
    dep = build_dependency(first)
    scores = score(dep, criterion)
    plan = select_uniform(dep, scores, ratio, round_to)
    pruned = apply_plan(plan)
    check_valid(pruned, model)
    report = evaluate(model, pruned, first.input_shapes, data, bench_rounds, threads)
    report.update({"schema": REPORT_SCHEMA, "input": source,
                   "options": {"ratio": ratio, "round_to": round_to, "criterion": criterion, "scope": "local",
                               "input_shapes": {k: list(v) for k, v in first.input_shapes.items()}},
                   "plan": plan.summary()})
    return PruneResult(pruned, plan, report)


def evaluate(dense: onnx.ModelProto, pruned: onnx.ModelProto, input_shapes, data: Dataset | None,
             bench_rounds: int = 20, threads: int = 0) -> dict:
    """Before/after cost, fidelity on `data` (synthetic inputs if None) and interleaved latency."""
    dense_graph, pruned_graph = ModelGraph(dense, input_shapes), ModelGraph(pruned, input_shapes)
    dense_sess = session(dense, threads)
    pruned_sess = load_in_runtime(pruned, threads)
    if data is None:
        data = synthetic_dataset(dense_sess, input_shapes, samples=8)
        data_kind = "synthetic"
    else:
        data_kind = "given"
    fidelity = compare(dense_sess, pruned_sess, data)
    report = {"before": {"params": count_params(dense_graph), "macs": count_macs(dense_graph), "size_bytes": model_size(dense)},
              "after": {"params": count_params(pruned_graph), "macs": count_macs(pruned_graph), "size_bytes": model_size(pruned)},
              "fidelity": {"data": data_kind, "samples": len(data), **fidelity.as_dict()},
              "validation": {"checker": "passed", "onnxruntime": "passed", "interface": "unchanged"}}
    if bench_rounds > 0:
        feed = next(data.take(1).batches(1))
        timings, ratios = measure_latency([dense_sess, pruned_sess], feed, rounds=bench_rounds)
        report["before"]["latency_ms"] = round(timings[0].p50_ms, 4)
        report["after"]["latency_ms"] = round(timings[1].p50_ms, 4)
        report["latency_ratio"] = round(ratios[1], 4)
    return report
