#!/usr/bin/env python3
"""Which allocation makes the same MACs fastest: plans at one MACs target, timed paired against dense.

    python tools/bench_latency_rankings.py --models nudenet_320n,light_shufflenet --macs 0.45

Each allocation (l2 scores, no data, round_to 8) is searched to the same kept MACs share:
- uniform: every group loses the same share;
- global: one ranking of group-normalised l2 scores (the MACs target's default);
- time/channel: global, importance divided by the predicted time a channel saves (profiled latency model);
- time/MAC: global, importance divided by the predicted time saved per MAC saved (the latency target's ranking).
Latency is bench_target_latency's paired ratio (sessions without spinning, fastest of 3 per side);
efficiency = MACs kept / latency kept. Shared machine: the load is printed with each row.
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
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402
from onnxprune.load import zoo  # noqa: E402
from onnxprune.load.data import synthetic_dataset  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.load.zoo import cache_dir  # noqa: E402
from onnxprune.score.criteria import score  # noqa: E402
from onnxprune.select.latency_profile import build_profiled_model  # noqa: E402
from onnxprune.select.plan import search_ratio, select_global, select_uniform  # noqa: E402

ROUND_TO = 8


def one(name: str, macs: float, threads: int, pairs: int, clock=time.perf_counter) -> list[dict]:
    model = onnx.load(zoo.fetch(name))
    dep = build_dependency(ModelGraph(model))
    latency = build_profiled_model(dep, threads, cache_dir() / "latency", round_to=ROUND_TO)
    costs, scores = latency.costs, score(dep, "l2")
    allocations = {"uniform": lambda r: select_uniform(dep, scores, r, ROUND_TO),
                   "global": lambda r: select_global(dep, scores, r, ROUND_TO)}
    for label, per_mac in (("time/channel", False), ("time/MAC", True)):
        cc = latency.channel_costs(per_mac=per_mac)
        allocations[label] = lambda r, cc=cc: select_global(dep, scores, r, ROUND_TO, channel_costs=cc)
    dense = make_session(model, threads)
    feed = next(synthetic_dataset(session(model), dep.graph.input_shapes, samples=1).batches(1))
    rows = []
    for label, select in allocations.items():
        plan = search_ratio(select, lambda p: costs.macs_after(p.removed) / costs.total_macs, macs,
                            scores=scores, round_to=ROUND_TO)
        kept = costs.macs_after(plan.removed) / costs.total_macs
        ratio = paired_ratio(dense, make_session(apply_plan(plan), threads), feed, pairs, clock=clock)["ratio"]
        rows.append({"model": name, "allocation": label, "macs": kept, "latency": ratio,
                     "predicted": latency.kept(plan.removed), "load": os.getloadavg()[0]})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="nudenet_320n,light_shufflenet,light_resnet50")
    ap.add_argument("--macs", type=float, default=0.45)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this process's CPU time per run (use with --threads 1 on a loaded machine)")
    args = ap.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rows = [r for name in args.models.split(",") for r in one(name, args.macs, args.threads, args.pairs, clock)]
    print(f"Allocations at {args.macs:g} of the MACs, l2, round_to {ROUND_TO}, {args.threads} threads, "
          f"{args.pairs} interleaved pairs, {args.clock} clock; onnxprune {revision()}\n")
    print("| model | allocation | MACs kept | latency (paired) | predicted | efficiency | load |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['allocation']} | {r['macs']:.3f} | {r['latency']:.3f} | {r['predicted']:.3f} | "
              f"{r['macs'] / r['latency']:.2f} | {r['load']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
