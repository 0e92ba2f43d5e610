#!/usr/bin/env python3
"""Prune, then quantize: task metric, size and paired latency of dense, int8, pruned and pruned + int8.

    python tools/bench_quantize.py --models nudenet_320n --level 0.5 --calib 32

For each model (tools/tasks.py: offline data, a calibration set and a disjoint evaluation set):
- dense: the model as shipped;
- int8: dense through the Quantize pass (ONNX Runtime's quantize_static, QDQ, per-channel, MinMax);
- pruned: `prune(target_macs=LEVEL, calib=...)` with the data-aware defaults;
- pruned+int8: the pruned model through the same Quantize pass.
Each is scored on its task and timed against dense (interleaved pairs, one thread each, median of
per-pair ratios; tools/bench_tasks.py's latency_ratio). Size is the serialized model's bytes.
Prints a Markdown table; --json writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import bench_tasks  # noqa: E402
import tasks  # noqa: E402


def variants(task: tasks.Task, level: float, calib: str, defaults: dict) -> dict[str, tuple[onnx.ModelProto, float]]:
    """name -> (model, seconds it took to make)."""
    import onnxprune
    from onnxprune.passes import PassContext, Quantize

    dense = task.model()
    out: dict[str, tuple[onnx.ModelProto, float]] = {"dense": (dense, 0.0)}
    context = PassContext(dense=dense, calib=calib, input_shapes=task.input_shapes())
    t = time.time()
    out["int8"] = (Quantize()(dense, context).model, time.time() - t)
    t = time.time()
    pruned = onnxprune.prune(dense, target_macs=level, calib=calib, input_shapes=task.input_shapes(),
                             bench_rounds=0, **defaults).model
    out[f"pruned {level:g}"] = (pruned, time.time() - t)
    t = time.time()
    out[f"pruned {level:g} + int8"] = (Quantize()(pruned, context).model, out[f"pruned {level:g}"][1] + time.time() - t)
    return out


def measure(name: str, level: float, n_calib: int, rounds: int, defaults: dict) -> list[dict]:
    task = tasks.get(name)
    ev = task.evaluation()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as folder:
        calib = os.path.join(folder, "calib.npz")
        np.savez(calib, **task.calibration(n_calib))
        made = variants(task, level, calib, defaults)
        paths = {}
        for label, (model, _) in made.items():
            paths[label] = os.path.join(folder, label.replace(" ", "_").replace("+", "") + ".onnx")
            onnx.save(model, paths[label])
        dense_preds = task.predict(tasks.session(paths["dense"]), ev)
        for label, (model, seconds) in made.items():
            preds = task.predict(tasks.session(paths[label]), ev)
            score = task.score(preds, ev, dense_preds)["score"]
            latency = 1.0 if label == "dense" else bench_tasks.latency_ratio(paths["dense"], paths[label],
                                                                              ev.feeds[0], rounds)
            rows.append({"model": name, "variant": label, "metric": task.metric, "score": float(score),
                         "size_bytes": os.path.getsize(paths[label]), "latency_ratio": latency,
                         "seconds": round(seconds, 1)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | variant | task metric | size | size vs dense | latency vs dense (paired) | build s |",
             "|---|---|---|---|---|---|---|"]
    dense = {r["model"]: r for r in rows if r["variant"] == "dense"}
    for r in rows:
        d = dense[r["model"]]
        lines.append(f"| {r['model']} | {r['variant']} | {r['metric']} {r['score']:.1f} | "
                     f"{r['size_bytes'] / 1e6:.2f} MB | {r['size_bytes'] / d['size_bytes']:.2f} | "
                     f"{r['latency_ratio']:.2f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="nudenet_320n", help="comma-separated task names (tools/tasks.py)")
    ap.add_argument("--level", type=float, default=0.5, help="MACs kept by pruning")
    ap.add_argument("--calib", type=int, default=32, help="calibration samples (pruning and quantization)")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved latency pairs")
    ap.add_argument("--config", default="{}", help="prune() keyword arguments as JSON (default: data-aware defaults)")
    ap.add_argument("--json", metavar="FILE", help="write every figure here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    rows = []
    for name in args.models.split(","):
        rows += measure(name, args.level, args.calib, args.rounds, json.loads(args.config))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
