#!/usr/bin/env python3
"""Which groups a plan cuts, and what each selection variant scores on a real task.

Prepares one model once (calibration statistics for the reconstruction criterion), then for each
config (PruneOptions keywords) chooses a plan at each MACs level, applies it with its recovery, and
scores the pruned model on the task of tools/tasks.py. With --groups, prints each group's kept
share, its MACs share and the first weight it touches, so one sees where a plan cuts (stem, neck,
heads). Usage:

    python tools/diag_plan.py nudenet_320n --levels 0.8 \
        --configs 'seq={"scope":"global"},dmg={"scope":"damage"}' --groups
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import tasks  # noqa: E402
from bench_tasks import parse_configs  # noqa: E402


def group_table(prep, plan) -> str:
    from onnxprune.select.plan import CostModel
    dep = prep.dep
    costs = CostModel(dep)
    total = costs.total_macs
    lines = []
    for grp in dep.groups:
        if grp.prunable <= 1:
            continue
        cut = int(plan.removed[grp.channels].sum())
        one = np.zeros(dep.num_channels, dtype=bool)
        one[grp.channels[~grp.frozen]] = True
        share = (total - costs.macs_after(one)) / total  # MACs that depend on this group
        names = [s.tensor for s in grp.slots if s.tensor in dep.graph.constants][:1]
        lines.append(f"{grp.id:>4} {grp.size:>5} kept {1 - cut / grp.size:5.2f}  macs {share:6.3f}  {' '.join(names)}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--levels", default="0.8")
    ap.add_argument("--configs", default='seq={"scope":"global"}')
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--groups", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--damage-samples", type=int, default=32)
    ap.add_argument("--save-damage", help="pickle the measured damage rows here")
    ap.add_argument("--load-damage", help="reuse damage rows pickled by --save-damage")
    ap.add_argument("--save", help="write each pruned model here as CONFIG_LEVEL.onnx (for tools/diag_detections.py)")
    ap.add_argument("--ridge-multiples", help="comma list replacing recover/ridge_choice.MULTIPLES (the ridges the "
                    "held-out batches choose from; e.g. 100,1e3,1e6 pulls every re-solve harder toward the dense weights)")
    ap.add_argument("--logit-floor", type=float, help="the probability fisher_logit_floor floors logits at "
                    "(score/logit_outputs.FLOOR, 0.01)")
    ap.add_argument("--logit-weight-floor", type=float, help="recover/logit_weights.FLOOR: the weight of a row far "
                    "from any decision in the sequential_logit re-solve")
    ap.add_argument("--fisher-probes", type=int, help="random output probes per calibration sample in fisher's "
                    "scores (score/fisher.PROBES, 2)")
    args = ap.parse_args()
    if args.fisher_probes:
        from onnxprune.score import fisher
        fisher.PROBES = args.fisher_probes
    if args.logit_weight_floor is not None:
        from onnxprune.recover import logit_weights
        logit_weights.FLOOR = args.logit_weight_floor
    if args.logit_floor:
        from onnxprune.score import logit_outputs
        logit_outputs.FLOOR = args.logit_floor
    if args.ridge_multiples:
        from onnxprune.recover import few_rows, ridge_choice
        ridge_choice.MULTIPLES = few_rows.MULTIPLES = tuple(float(m) for m in args.ridge_multiples.split(","))
    warnings.filterwarnings("ignore")
    from onnxprune.options import PruneOptions, Target
    from onnxprune.stages import apply_and_recover, choose_plan, prepare

    import onnxprune.stages as stages
    memo: dict = {}
    measure = stages.group_damage

    def cached(dep, data, scores, **kw):  # the damage curves do not depend on the level: measured once
        key = id(dep)
        if key not in memo and args.load_damage:
            memo[key] = pickle.loads(Path(args.load_damage).read_bytes())
        if key not in memo:
            t = time.time()
            memo[key] = measure(dep, data, scores, samples=args.damage_samples, **kw)
            print(f"damage measured in {time.time() - t:.0f} s", flush=True)
            if args.save_damage:
                Path(args.save_damage).write_bytes(pickle.dumps(memo[key]))
        return memo[key]
    stages.group_damage = cached
    base = tasks.baseline(args.model, args.calib_n)
    task, model, ev, dense_preds, calib, dense = base.task, base.model, base.ev, base.dense_preds, base.calib, base.dense_score
    levels = [float(x) for x in args.levels.split(",")]
    base = PruneOptions(Target(macs=levels[0]), input_shapes=task.input_shapes(), bench_rounds=0)
    preps: dict = {}

    def prepared(opts):
        """The preparation these options need: calibration views are made in prepare() (with the seed),
        so a config asking for other views, or views with another seed, is prepared anew (one kept)."""
        views = opts.calib_views or 1
        key = (views, tuple(opts.calib_view_kinds), opts.seed if views > 1 else 0)
        if key not in preps:
            preps.clear()
            t0 = time.time()
            preps[key] = prepare(model, dataclasses.replace(base, calib_views=views, calib_view_kinds=opts.calib_view_kinds,
                                                            seed=key[2]), calib)
            print(f"{args.model}: dense {dense:.1f}; prepared ({views} views) in {time.time() - t0:.0f} s", flush=True)
        return preps[key]
    results = []
    for name, kw in parse_configs(args.configs).items():
        for level in levels:
            opts = dataclasses.replace(base, target=Target(macs=level), **kw).resolved(True)
            prep = prepared(opts)
            if opts.round_to is None:  # prepare() fills the rounding default; resolved() does not
                opts = dataclasses.replace(opts, round_to=prep.options.round_to)
            p = dataclasses.replace(prep, options=opts)
            t0 = time.time()
            plan = choose_plan(p)
            pruned = apply_and_recover(p, plan)
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                import onnx
                onnx.save(pruned, str(Path(args.save) / f"{name}_{level}.onnx"))
            preds = task.predict(tasks.session(pruned), ev)
            figures = task.score(preds, ev, dense_preds)
            s = figures["score"]
            dt = time.time() - t0
            kept = plan.options.get("estimated_kept")
            more = "  ".join(f"{k} {v:g}" for k, v in figures.items() if k != "score")  # e.g. a wide task's first-N score
            print(f"{name:>12} {level:.2f}: score {s:6.1f} ({s - dense:+.1f}) macs {kept:.3f}  {dt:.0f} s  {more}", flush=True)
            if args.groups:
                print(group_table(p, plan), flush=True)
            results.append({"model": args.model, "config": name, "kwargs": kw, "level": level, "score": s,
                            "dense": dense, "macs": kept, "seconds": dt, "figures": figures,
                            "calib_n": args.calib_n, "eval": ev.info})
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
