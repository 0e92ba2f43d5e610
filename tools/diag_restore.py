#!/usr/bin/env python3
"""Which cut groups cause a pruned model's errors: the default plan with some groups put back whole.

Prepares a model of tools/tasks.py once, chooses the plan of the given selection (PruneOptions
keywords; the data-aware default if omitted) at one MACs level, then for each pattern set (tensor-name
globs joined by '|') keeps every group with a slot matching one of them whole, applies the rest of the
plan with the chosen recovery and scores the task. The MACs kept rise by what the restored groups
carried; the plan is otherwise the same, so a score that recovers names the groups at fault. Usage:

    python tools/diag_restore.py nudenet_320n --level 0.8 'model.22.cv2*' 'model.22.cv3*' 'model.21*|model.18*'
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


import tasks  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("patterns", nargs="+", help="tensor-name globs joined by '|', one set per run")
    ap.add_argument("--level", type=float, default=0.8)
    ap.add_argument("--select", default="{}", help="PruneOptions keywords of the selection (JSON)")
    ap.add_argument("--calib-n", type=int, default=32)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from onnxprune.couple.plan import Plan
    from onnxprune.options import PruneOptions, Target
    from onnxprune.select.plan import CostModel
    from onnxprune.stages import apply_and_recover, choose_plan, prepare

    base = tasks.baseline(args.model, args.calib_n)
    task, model, ev, dense_preds, calib = base.task, base.model, base.ev, base.dense_preds, base.calib
    base = PruneOptions(Target(macs=args.level), input_shapes=task.input_shapes(), bench_rounds=0,
                        **json.loads(args.select))
    prep = prepare(model, base, calib)
    prep = dataclasses.replace(prep, options=dataclasses.replace(base.resolved(True), round_to=prep.options.round_to))
    plan = choose_plan(prep)
    dep, costs = prep.dep, CostModel(prep.dep)
    for text in ["", *args.patterns]:
        globs = [p for p in text.split("|") if p]
        removed = plan.removed.copy()
        for grp in dep.groups:
            if any(fnmatch.fnmatch(s.tensor, p) for s in grp.slots for p in globs):
                removed[grp.channels] = False
        pruned = apply_and_recover(prep, Plan(dep, removed, plan.options))
        score = task.score(task.predict(tasks.session(pruned), ev), ev, dense_preds)["score"]
        kept = costs.macs_after(removed) / costs.total_macs
        print(f"restored {text or '(none: the plan)':40s} macs {kept:.3f}  score {score:6.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
