#!/usr/bin/env python3
"""Where the damage comes from: prune ONE group at a time and score the task.

Prepares a model of tools/tasks.py once (calibration statistics), then for every prunable group
removes the share `--ratio` of its channels (lowest criterion score first, widths rounded to
`--round-to`), re-solves with each `--recover` mode and scores the pruned model on the task's
evaluation set. Also prints the per-channel output error on the evaluation set (MSE over dense
variance, averaged over channels, as the price allocator measures it) and the MACs the cut saves,
so a group whose damage per MAC saved is extreme stands out. Usage:

    python tools/diag_groups.py nudenet_320n --ratio 0.5 --recover none,direct
    python tools/diag_groups.py ppocr_det --ratio 0.5 --recover direct --json /tmp/det_groups.json

Output: one line per group (id, width, MACs share saved, first weight, then per mode: task score and
output error), sorted by the last mode's task score, worst first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import tasks  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--ratio", type=float, default=0.5, help="share of each group's channels removed")
    ap.add_argument("--recover", default="none,direct", help="recovery modes, comma-separated (direct: sequential "
                    "re-solve of the layers that lose inputs only)")
    ap.add_argument("--criterion", default="reconstruction")
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--groups", default="", help="only these group ids (comma-separated)")
    ap.add_argument("--json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from onnxprune.apply.rewrite import apply_plan
    from onnxprune.couple.plan import Plan
    from onnxprune.recover.sequential import reconstruct
    from onnxprune.options import PruneOptions, Target
    from onnxprune.score.criteria import score
    from onnxprune.select.allocate import output_error
    from onnxprune.select.plan import CostModel, rounded_keep
    from onnxprune.stages import _recovered, prepare

    task = tasks.get(args.model)
    model = task.model()
    ev = task.evaluation()
    dense_sess = tasks.session(model)
    dense_preds = task.predict(dense_sess, ev)
    dense_out = [np.concatenate(o) for o in zip(*task.run(dense_sess, ev))]
    calib = str(Path(tempfile.mkdtemp()) / "calib.npz")
    np.savez(calib, **task.calibration(args.calib_n))
    modes = args.recover.split(",")
    opts = PruneOptions(Target(macs=0.8), input_shapes=task.input_shapes(), bench_rounds=0,
                        criterion=args.criterion, recover="lstsq" if "lstsq" in modes else "sequential")
    t0 = time.time()
    prep = prepare(model, opts, calib)
    print(f"{args.model}: prepared in {time.time() - t0:.0f} s", flush=True)
    dep = prep.dep
    scores = score(dep, args.criterion, stats=prep.stats, data=prep.data)
    costs = CostModel(dep)
    wanted = {int(g) for g in args.groups.split(",") if g}
    rows = []
    for grp in dep.groups:
        if grp.prunable <= 1 or (wanted and grp.id not in wanted):
            continue
        free = grp.channels[~grp.frozen]
        drop = min(grp.size - rounded_keep(grp.size, 1 - args.ratio, args.round_to), len(free))
        if drop <= 0:
            continue
        removed = np.zeros(dep.num_channels, dtype=bool)
        removed[free[np.argsort(scores[free], kind="stable")[:drop]]] = True
        saved = 1 - costs.macs_after(removed) / costs.total_macs
        name = next((s.tensor for s in grp.slots if s.tensor in dep.graph.constants), "?")
        row = {"group": grp.id, "size": grp.size, "drop": int(drop), "macs_saved": saved, "weight": name}
        for mode in modes:
            if mode == "direct":  # sequential, only the layers that lose inputs (as --scope price measures)
                pruned = apply_plan(Plan(dep, removed), reconstruct(dep, removed, prep.data, direct_only=True))
            else:
                p = dataclasses.replace(prep, options=dataclasses.replace(prep.options, recover=mode))
                pruned = _recovered(p, Plan(dep, removed), mode)
            sess = tasks.session(pruned)
            preds = task.predict(sess, ev)
            out = [np.concatenate(o) for o in zip(*task.run(sess, ev))]
            row[mode] = {"score": task.score(preds, ev, dense_preds)["score"], "error": output_error(dense_out, out)}
        rows.append(row)
        cells = "  ".join(f"{m}: {row[m]['score']:5.1f} err {row[m]['error']:.4f}" for m in modes)
        print(f"{grp.id:>4} {grp.size:>5} -{drop:<4} macs {saved:6.4f}  {cells}  {name}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\nworst first:")
    for row in sorted(rows, key=lambda r: r[modes[-1]]["score"]):
        cells = "  ".join(f"{m}: {row[m]['score']:5.1f} err {row[m]['error']:.4f}" for m in modes)
        print(f"{row['group']:>4} {row['size']:>5} macs {row['macs_saved']:6.4f}  {cells}  {row['weight']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
