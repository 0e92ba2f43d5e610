#!/usr/bin/env python3
"""How many MACs can a plan keep at a latency target? Allocations compared at the same measured latency.

    python tools/bench_latency_ceiling.py --models nudenet_320n,light_shufflenet --target 0.5 \
        --threads 1 --clock cpu --pairs 15

Per model (l2 scores, no data, round_to 8, the profiled latency model of select/latency_profile.py),
each allocation ranks channels by importance / (predicted time saved per MAC saved)^gamma:
- uniform: every group loses the same share (no ranking across groups);
- gamma 0: the MACs target's global l2 ranking, blind to time;
- gamma 1: what `--target-latency` ranks by;
- gamma 2, 4: leaning further toward time;
- cost only: importance only orders channels inside a group; the groups go by time per MAC alone
  (a probe of the most MACs any plan of this ranking family keeps at that latency: its fidelity is
  not meant to be usable).
For each, the plan is searched on the predicted latency, built, timed paired against dense
(bench_target_latency's interleaved pairs; `--clock cpu` counts this process's CPU time, steadier on
a loaded machine), and the aim corrected until the measured ratio is within 5% of the target (at most
--attempts). With --depth K the K least influential residual units are removed first (synthetic
data) and the widths of the shallower model pruned to the same overall target: removing a whole unit
also removes its kernels' fixed cost. Efficiency = MACs kept / latency kept. Fidelity = the worst output's cosine to dense on
--samples synthetic inputs (random weights on the light zoo: only a relative guide); with --task,
also the task metric of tools/tasks.py where the model has one (NudeNet face F1 and PP-OCR det line
F1, both against the dense model's predictions).
The load average is printed next to every row: figures taken under load are indicative only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from bench_target_latency import make_session, paired_ratio  # noqa: E402
from benchlib import revision  # noqa: E402
from onnxprune.apply.rewrite import apply_plan  # noqa: E402
from onnxprune.couple.dependency import build_dependency  # noqa: E402
from onnxprune.graph.cost import count_macs  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402
from onnxprune.load import zoo  # noqa: E402
from onnxprune.load.data import synthetic_dataset  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.load.zoo import cache_dir  # noqa: E402
from onnxprune.score.criteria import score  # noqa: E402
from onnxprune.select.latency import TOLERANCE, _next_aim  # noqa: E402
from onnxprune.select.latency_profile import build_profiled_model  # noqa: E402
from onnxprune.select.plan import search_ratio, select_global, select_uniform  # noqa: E402

ROUND_TO = 8
GAMMAS = {"uniform": -1.0, "macs (gamma 0)": 0.0, "time/MAC (gamma 1)": 1.0, "gamma 2": 2.0, "gamma 4": 4.0,
          "cost only": None}
MODELS = "light_resnet50,light_densenet121,light_inception_v1,light_squeezenet,light_shufflenet,nudenet_320n,ppocr_det"


def cost_only(costs: dict[int, float]) -> dict[int, float]:
    """Costs so steep that the ranking across groups is by cost alone: each group's cost raised so
    that the group-normalised importance spread (within a factor of the largest score ratio) cannot
    reorder two groups of different cost."""
    return {g: c ** 16 for g, c in costs.items()}


def cosine_worst(dense: onnx.ModelProto, pruned: onnx.ModelProto, feeds: list[dict]) -> float:
    sd, sp = session(dense), session(pruned)
    worst = 1.0
    for feed in feeds:
        for a, b in zip(sd.run(None, feed), sp.run(None, feed)):
            a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
            if a.size and np.issubdtype(a.dtype, np.floating):
                worst = min(worst, float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
    return worst


def shallower(model: onnx.ModelProto, depth: int, threads: int) -> onnx.ModelProto:
    """`model` without its `depth` least influential residual units (onnxprune's --depth, synthetic data)."""
    import onnxprune
    return onnxprune.prune(model, depth=depth, recover="none", bench_rounds=0, threads=threads).model


def task_score(name: str, dense: onnx.ModelProto, pruned: onnx.ModelProto) -> float | None:
    """The task metric of tools/tasks.py (face F1 vs dense for NudeNet, line F1 for PP-OCR det), or None."""
    import tasks
    named = tasks.named_tasks()
    if name not in named:
        return None
    task = named[name]()
    ev = task.evaluation()
    dense_preds = task.predict(tasks.session(dense), ev)
    return float(task.score(task.predict(tasks.session(pruned), ev), ev, dense_preds)["score"])


def one(name: str, args, clock) -> list[dict]:
    model = onnx.load(zoo.fetch(name))
    dense = make_session(model, args.threads)
    data = synthetic_dataset(session(model), ModelGraph(model).input_shapes, samples=args.samples)
    feeds = list(data.batches(1))
    base, base_time, base_macs = model, 1.0, 1.0  # widths are pruned from `base`; with --depth, the shallower model
    if args.depth:
        base = shallower(model, args.depth, args.threads)
        base_time = paired_ratio(dense, make_session(base, args.threads), feeds[0], args.pairs, clock=clock)["ratio"]
        base_macs = count_macs(ModelGraph(base)) / count_macs(ModelGraph(model))
    dep = build_dependency(ModelGraph(base))
    latency = build_profiled_model(dep, args.threads, cache_dir() / "latency", round_to=ROUND_TO)
    scores = score(dep, "l2")
    per_mac = latency.channel_costs(per_mac=True)
    rows = []
    for label, gamma in GAMMAS.items():
        if args.only and not any(o in label for o in args.only.split(",")):
            continue
        cc = cost_only(per_mac) if gamma is None else {g: c ** gamma for g, c in per_mac.items()}
        select = (lambda r, cc=cc: select_global(dep, scores, r, ROUND_TO, channel_costs=cc or None))
        if gamma == -1.0:
            select = (lambda r: select_uniform(dep, scores, r, ROUND_TO))
        aim, aims, tried = args.target, [], []
        for _ in range(args.attempts):
            plan = search_ratio(select, lambda p: base_time * latency.kept(p.removed), aim, scores=scores,
                                round_to=ROUND_TO)
            pruned = apply_plan(plan)
            measured = paired_ratio(dense, make_session(pruned, args.threads), feeds[0], args.pairs, clock=clock)["ratio"]
            tried.append((abs(measured - args.target), plan, pruned, measured))
            if abs(measured - args.target) <= TOLERANCE * args.target:
                break
            aims.append((aim, measured))
            aim = _next_aim(aims, args.target)
        _, plan, pruned, measured = min(tried, key=lambda t: t[0])
        macs = base_macs * latency.costs.macs_after(plan.removed) / latency.costs.total_macs
        label = f"{label} + depth {args.depth}" if args.depth else label
        rows.append({"model": name, "allocation": label, "macs": macs, "latency": measured,
                     "predicted": base_time * latency.kept(plan.removed), "attempts": len(tried),
                     "cosine": cosine_worst(model, pruned, feeds), "load": os.getloadavg()[0],
                     "task": task_score(name, model, pruned) if args.task else None})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=15)
    ap.add_argument("--attempts", type=int, default=4)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--depth", type=int, default=0,
                    help="remove this many residual units first (onnxprune --depth), then prune widths to the target")
    ap.add_argument("--task", action="store_true",
                    help="also score each plan on its task (tools/tasks.py: NudeNet face F1, PP-OCR det line F1)")
    ap.add_argument("--only", default="", help="comma-separated substrings of the allocation labels to run")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                    help="cpu: this process's CPU time per run (use with --threads 1 on a loaded machine)")
    args = ap.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rows = [r for name in args.models.split(",") for r in one(name, args, clock)]
    print(f"Allocations at {args.target:g} of the latency, l2, round_to {ROUND_TO}, {args.threads} threads, "
          f"{args.pairs} interleaved pairs, {args.clock} clock; onnxprune {revision()}\n")
    print("| model | allocation | MACs kept | latency (paired) | predicted | efficiency | worst cosine | task | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['allocation']} | {r['macs']:.3f} | {r['latency']:.3f} | {r['predicted']:.3f} | "
              f"{r['macs'] / r['latency']:.2f} | {r['cosine']:.3f} | "
              f"{'-' if r['task'] is None else format(r['task'], '.1f')} | {r['load']:.1f} |")
    best = {}
    for r in rows:
        best[r["model"]] = max(best.get(r["model"], 0.0), r["macs"] / r["latency"])
    for label in dict.fromkeys(r["allocation"] for r in rows):
        values = [r["macs"] / r["latency"] for r in rows if r["allocation"] == label]
        print(f"\nmedian efficiency, {label}: {np.median(values):.2f}", end="")
    print(f"\nmedian of each model's best allocation: {np.median(list(best.values())):.2f} "
          f"({', '.join(f'{m} {v:.2f}' for m, v in best.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
