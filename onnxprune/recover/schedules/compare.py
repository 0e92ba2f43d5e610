"""Every schedule on one model, side by side: `compare(model, train, val)` -> a report with one row each.

Each schedule trains the same starting weights for the same epochs with the same seed; the rows
are then measured together (speed interleaved across all models). The report follows the schema
"onnxprune.compare/1": options, energy method, rows, notes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np
import onnx

from onnxprune.load.data import Dataset
from onnxprune.errors import BadInputError
from onnxprune.load.fold import fold_constants
from onnxprune.recover.schedules.layers import find_layers
from onnxprune.recover.schedules.measure import accuracy, energy_columns, energy_method, measure_rapl, measure_speed, static_stats
from onnxprune.recover.schedules.methods import SCHEDULES, ScheduleOptions, ScheduleResult, train_schedule

COMPARE_SCHEMA = "onnxprune.compare/1"
ORDER = ("dense", "pre", "in", "post", "set", "post-structured")

NOTES = (
    "Unstructured schedules store zeros in dense tensors: ONNX Runtime's dense kernels do the same work, so their "
    "latency and measured (CPU-time) energy match the dense model's within noise; what falls is the zipped size and "
    "the nonzero (ideal) MACs. Channel pruning (post-structured) makes the tensors smaller, so it alone runs faster "
    "here.",
    "Sparsity columns count zeros against the dense model's layer sizes (removed channels count as zeros).",
    "Every schedule trained the same starting weights for the same epochs with the same seed; accuracy is the last "
    "epoch's, with no selection on the evaluation data.",
)


@dataclass
class Comparison:
    report: dict                     # JSON-ready: options, energy method, rows, notes
    results: list[ScheduleResult]    # the trained models, in row order


def compare(model: onnx.ModelProto, data: Dataset, val_data: Dataset, options: ScheduleOptions | None = None, *,
            schedules: Iterable[str] | None = None, rounds: int = 30, repeat: int = 20, batch: int = 1,
            threads: int = 0, bar_factory: Callable[[str, int], object] | None = None) -> Comparison:
    """Train `model` under every schedule (dense baseline first) and measure the results on `val_data`.

    `bar_factory(description, total_steps)` may return a progress bar (tqdm-like) per schedule.
    """
    options = options or ScheduleOptions()
    names = list(schedules) if schedules is not None else list(ORDER)
    unknown = [n for n in names if n not in SCHEDULES]
    if unknown:
        raise BadInputError(f"unknown schedule(s) {unknown}; choose from {', '.join(SCHEDULES)}")
    if "dense" not in names:
        names.insert(0, "dense")
    if val_data.labels is None:
        raise BadInputError("compare needs labels in the evaluation data (a 'labels' array) to report accuracy")
    results: list[ScheduleResult] = []
    seconds: list[float] = []
    steps = options.epochs * -(-len(data) // options.train.batch_size)
    for name in names:
        bar = bar_factory(SCHEDULES[name].title, steps) if bar_factory else None
        start = time.perf_counter()
        results.append(train_schedule(model, data, name, options, val_data=None, bar=bar))
        seconds.append(time.perf_counter() - start)
        if bar is not None:
            bar.close()
    report = measure_results(model, results, seconds, val_data, options, rounds, repeat, batch, threads)
    report["options"]["train_samples"] = len(data)
    return Comparison(report, results)


def measure_results(model: onnx.ModelProto, results: list[ScheduleResult], seconds: list[float], val_data: Dataset,
                    options: ScheduleOptions, rounds: int = 30, repeat: int = 20, batch: int = 1,
                    threads: int = 0) -> dict:
    """The comparison report for trained results (the first is the baseline)."""
    shapes = {k: (batch,) + tuple(v.shape[2:]) for k, v in val_data.inputs.items()}
    dense_sizes: dict[str, int] = {}
    for layer in find_layers(fold_constants(model)):
        dense_sizes[layer.kind] = dense_sizes.get(layer.kind, 0) + layer.size
    feed = next(val_data.take(batch).batches(batch))
    models = [r.model for r in results]
    timings = measure_speed(models, feed, rounds, repeat, threads)
    method = energy_method()
    rapl = measure_rapl(models, feed, min(5, rounds), threads) if method["kind"] == "rapl" else [None] * len(models)
    rows = []
    for result, took, timing, mj in zip(results, seconds, timings, rapl):
        stats = static_stats(result.model, dense_sizes, shapes)
        rows.append({"schedule": result.schedule, "title": SCHEDULES[result.schedule].title,
                     "structured": SCHEDULES[result.schedule].structured,
                     "accuracy": accuracy(result.model, val_data, threads), **stats,
                     "latency_ms": round(timing.latency_ms, 5), "cpu_ms": round(timing.cpu_ms, 5),
                     "latency_ratio": round(timing.ratio, 4), **energy_columns(stats, timing, method, mj),
                     "train_seconds": round(took, 2), "info": _jsonable(result.info),
                     "history": [_jsonable(h) for h in result.history]})
    base = rows[0]["accuracy"]
    for row in rows:
        row["accuracy_delta"] = None if base is None or row["accuracy"] is None else round(row["accuracy"] - base, 4)
    train = asdict(options.train)
    return {"schema": COMPARE_SCHEMA,
            "options": {"epochs": options.epochs, "sparsity": options.sparsity, "zeta": options.zeta,
                        "zeta_decay": options.zeta_decay,
                        "ramp": options.ramp, "finetune_share": options.finetune_share, "reinit": options.reinit,
                        "train": train, "batch": batch, "rounds": rounds, "repeat": repeat,
                        "eval_samples": len(val_data)},
            "energy": method, "rows": rows, "notes": list(NOTES)}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value
