#!/usr/bin/env python3
"""What a latency target costs in task accuracy: `--target-latency` with the task's calibration data.

    python tools/bench_latency_task.py nudenet_320n --targets 0.5,0.7 --threads 1

For a task of tools/tasks.py (its model, calibration images and metric), each target is pruned with
onnxprune's data-aware defaults (calibration data given: reconstruction criterion, sequential
recovery) and `target_latency=T` at --threads; prints the MACs kept, the latency ratio onnxprune
measured for its chosen plan (wall clock, interleaved with dense), the task score against dense and
the load average (a shared machine: the latency column moves with it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import onnxprune  # noqa: E402
import tasks  # noqa: E402
from benchlib import revision  # noqa: E402
from onnxprune.graph.cost import count_macs  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", nargs="?", default="nudenet_320n")
    ap.add_argument("--targets", default="0.5,0.7")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib-n", type=int, default=16)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    task = tasks.get(args.task)
    dense = task.model()
    ev = task.evaluation()
    dense_preds = task.predict(tasks.session(dense), ev)
    dense_macs = count_macs(ModelGraph(dense))
    print(f"{args.task}: --target-latency with {args.calib_n} calibration samples, {args.threads} threads; "
          f"onnxprune {revision()}\n")
    print(f"| target | MACs kept | latency (measured by onnxprune) | {task.metric} | criterion, recovery | load |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        calib = os.path.join(folder, "calib.npz")
        np.savez(calib, **task.calibration(args.calib_n))
        for target in (float(t) for t in args.targets.split(",")):
            result = onnxprune.prune(dense, calib=calib, bench_rounds=0, threads=args.threads, target_latency=target)
            score = task.score(task.predict(tasks.session(result.model), ev), ev, dense_preds)["score"]
            measured = result.report["plan"].get("latency", {}).get("measured_latency_ratio")
            opts = result.report["options"]
            print(f"| {target:g} | {count_macs(ModelGraph(result.model)) / dense_macs:.3f} | {measured} | {score:.1f} | "
                  f"{opts.get('criterion')}, {opts.get('recover')} | {os.getloadavg()[0]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
