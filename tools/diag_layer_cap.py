#!/usr/bin/env python3
"""Where the per-layer cap changes default plans: the plan the search's last width steps chose before
wave 16 (no least width: they could take a group past --max-layer-ratio) against today's, from the same
channel scores, per model and MACs level; with --score, both models scored on the task of tools/tasks.py
where the plans differ. Usage:

    python tools/diag_layer_cap.py --models digits_cnn,ppocr_cls --levels 0.8,0.5 --score --json out.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import tasks  # noqa: E402
from benchlib import append_line  # noqa: E402


def past_cap(plan, cap: float) -> list[str]:
    """Groups the plan takes below the cap: 'group kept/size'."""
    out = []
    for grp in plan.dep.groups:
        kept = grp.size - int(plan.removed[grp.channels].sum())
        if grp.size - kept > int(grp.size * cap):
            out.append(f"{grp.id} {kept}/{grp.size}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="digits_cnn")
    ap.add_argument("--levels", default="0.8,0.5")
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--score", action="store_true", help="score both plans on the task where they differ")
    ap.add_argument("--json", help="append one line per model and level")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import onnxprune.stages as stages
    from onnxprune.options import PruneOptions, Target
    from onnxprune.select.plan import CostModel

    least = stages._least
    for name in args.models.split(","):
        base = tasks.baseline(name, args.calib_n)
        options = PruneOptions(Target(macs=float(args.levels.split(",")[0])), input_shapes=base.task.input_shapes(),
                               bench_rounds=0)
        t0 = time.time()
        prep = stages.prepare(base.model, options, base.calib)
        scores = stages.channel_scores(prep, prep.options)
        costs = CostModel(prep.dep)
        print(f"{name}: dense {base.dense_score:.2f}; prepared and scored in {time.time() - t0:.0f} s", flush=True)
        for level in (float(x) for x in args.levels.split(",")):
            opts = dataclasses.replace(prep.options, target=Target(macs=level))
            plans = {}
            for variant, floor in (("before", lambda p, o: {}), ("now", least)):
                stages._least = floor
                plans[variant] = stages.choose_plan(prep, opts, scores)
            stages._least = least
            row = {"model": name, "level": level, "cap": opts.max_layer_ratio, "dense": round(base.dense_score, 2),
                   "differ": not np.array_equal(plans["before"].removed, plans["now"].removed)}
            for variant, plan in plans.items():
                row[f"macs_{variant}"] = round(costs.macs_after(plan.removed) / costs.total_macs, 4)
                row[f"past_cap_{variant}"] = past_cap(plan, opts.max_layer_ratio)
                if args.score and row["differ"]:
                    pruned = stages.apply_and_recover(dataclasses.replace(prep, options=opts), plan)
                    preds = base.task.predict(tasks.session(pruned), base.ev)
                    row[f"score_{variant}"] = round(base.task.score(preds, base.ev, base.dense_preds)["score"], 2)
            print(row, flush=True)
            if args.json:
                append_line(args.json, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
