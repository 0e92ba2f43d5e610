#!/usr/bin/env python3
"""Recovery variants at ONE fixed channel selection: does the re-solve help or hurt, and with which ridge?

Prepares a model of tools/tasks.py once, chooses the plan of the given selection (PruneOptions keywords,
the data-aware default if omitted) at each level, then applies that same plan with each recovery
variant and scores the task. A variant is `none`, `bias`, `lstsq`, or `seq:RIDGE` (sequential
reconstruction with that relative ridge; the default is 1e-2). Usage:

    python tools/diag_recover.py nudenet_320n --levels 0.8 --variants none,lstsq,seq:1e-3,seq:1e-2,seq:1e-1,seq:1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


import tasks  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--levels", default="0.8")
    ap.add_argument("--select", default="{}", help="PruneOptions keywords of the selection (JSON)")
    ap.add_argument("--variants", default="none,lstsq,seq:1e-2")
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from onnxprune.apply.rewrite import apply_plan
    from onnxprune.options import PruneOptions, Target
    from onnxprune.recover.reconstruction import recover
    from onnxprune.recover.sequential import reconstruct
    from onnxprune.stages import choose_plan, prepare

    base = tasks.baseline(args.model, args.calib_n)
    task, model, ev, dense_preds, calib = base.task, base.model, base.ev, base.dense_preds, base.calib
    levels = [float(x) for x in args.levels.split(",")]
    base = PruneOptions(Target(macs=levels[0]), input_shapes=task.input_shapes(), bench_rounds=0, recover="lstsq",
                        **json.loads(args.select))
    prep = prepare(model, base, calib)
    results = []
    for level in levels:
        opts = dataclasses.replace(prep.options, target=Target(macs=level))
        plan = choose_plan(dataclasses.replace(prep, options=opts))
        for variant in args.variants.split(","):
            t0 = time.time()
            if variant.startswith("seq"):
                ridge = float(variant.partition(":")[2] or 1e-2)
                overrides = reconstruct(prep.dep, plan.removed, prep.data, ridge=ridge)
            else:
                overrides = recover(prep.dep, plan.removed, prep.stats, variant)
            preds = task.predict(tasks.session(apply_plan(plan, overrides)), ev)
            s = task.score(preds, ev, dense_preds)["score"]
            print(f"{level:.2f} {variant:>10}: score {s:6.1f}  {time.time() - t0:.0f} s", flush=True)
            results.append({"model": args.model, "level": level, "variant": variant, "score": s})
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
