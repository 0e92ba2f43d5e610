#!/usr/bin/env python3
"""Prune in k steps without training, re-scoring on the already pruned and re-solved model each time.

One-shot fisher adds per-channel damages measured on the dense model; after part of a group is gone,
the rest of it may matter more (redundancy shows up only once a partner is removed). Here step j
prunes the current model to the j-th of k geometrically spaced MACs targets (of the dense MACs),
with every score, statistic and sequential re-solve taken on the current model and the same 32
unlabelled calibration samples; the final model is scored on the task of tools/tasks.py. Usage:

    python tools/diag_steps.py nudenet_320n --level 0.8 --steps 2 \
        --configs 'fc50={"criterion":"fisher","scope":"cost","max_layer_ratio":0.5}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


import tasks  # noqa: E402
from bench_tasks import parse_configs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--level", type=float, default=0.8)
    ap.add_argument("--steps", default="2", help="comma-separated step counts to try")
    ap.add_argument("--configs", default="default={}")
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from onnxprune.graph.cost import count_macs
    from onnxprune.graph.model_graph import ModelGraph
    from onnxprune.options import PruneOptions, Target
    from onnxprune.stages import apply_and_recover, choose_plan, prepare

    base = tasks.baseline(args.model, args.calib_n)
    task, dense_model, ev, dense_preds, calib, dense = (base.task, base.model, base.ev, base.dense_preds, base.calib,
                                                        base.dense_score)
    shapes = task.input_shapes()
    dense_macs = count_macs(ModelGraph(dense_model, shapes))
    results = []
    for name, kw in parse_configs(args.configs).items():
        for steps in [int(s) for s in args.steps.split(",")]:
            t0, model, kept = time.time(), dense_model, 1.0
            for j in range(1, steps + 1):
                goal = args.level ** (j / steps)
                opts = PruneOptions(Target(macs=min(0.999, goal / kept)), input_shapes=shapes, bench_rounds=0, **kw)
                prep = prepare(model, opts, calib)
                model = apply_and_recover(prep, choose_plan(prep))
                kept = count_macs(ModelGraph(model, shapes)) / dense_macs
            s = task.score(task.predict(tasks.session(model), ev), ev, dense_preds)["score"]
            dt = time.time() - t0
            print(f"{name:>12} {steps} steps to {args.level:.2f}: score {s:6.1f} ({s - dense:+.1f}) macs {kept:.3f}  "
                  f"{dt:.0f} s", flush=True)
            results.append({"model": args.model, "config": name, "kwargs": kw, "level": args.level, "steps": steps,
                            "score": s, "dense": dense, "macs": kept, "seconds": dt})
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
