#!/usr/bin/env python3
"""Where a pruned model's time goes, node by node: dense against `--target-macs` and `--target-latency`.

    python tools/diag_latency_nodes.py light_inception_v1 --target 0.5 --threads 2 --top 15

Prunes the zoo model (l2, global, no data, as tools/bench_latency_efficiency.py does) to each target,
then profiles dense and the pruned models in one interleaved ONNX Runtime profile
(select/latency_profile.py: one run of each model in turn, the fastest run per kernel, kernels
charged back to the original node). Prints, per op type and for the nodes that cost the most dense
time: dense microseconds, each pruned model's microseconds, the node's kept work (MACs, or output
size for ops without) and the widths its output has; and for the latency target, what the latency
model predicted for that node against what the profile measured. A latency target's graph has its
LRNs written as band Convs (graph/lrn_band.py): their kernels show under the band's ops (Conv, Mul,
Sqrt, Div), the LRN rows of the other models under LRN. The load average is printed with the
figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.load import zoo  # noqa: E402
from onnxprune.select.latency_profile import build_profiled_model, profile_interleaved  # noqa: E402
from onnxprune.select.plan import CostModel  # noqa: E402
from onnxprune.load.zoo import cache_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--kinds", default="macs,latency")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    dense = onnx.load(zoo.fetch(args.model) if not os.path.exists(args.model) else args.model)
    pruned, works, plans, dep = {}, {}, {}, None
    for kind in args.kinds.split(","):
        result = onnxprune.prune(dense, criterion="l2", scope="global", recover="none", bench_rounds=0,
                                 threads=args.threads, **{f"target_{kind}": args.target})
        plan, dep = result.plan, result.plan.dep  # the prepared (folded) model's analysis
        costs = CostModel(dep)
        by_index = costs.node_work(plan.removed)  # by the node's name: a latency target's graph has LRN rewritten
        pruned[kind], plans[kind] = result.model, plan
        works[kind] = {n.name: by_index.get(n.index, 1.0) for n in dep.graph.nodes}
        print(f"{kind} {args.target:g}: MACs kept {costs.macs_after(plan.removed) / costs.total_macs:.3f}",
              file=sys.stderr)
    graph = dep.graph
    load = os.getloadavg()[0]
    names = list(pruned)
    times = profile_interleaved([dense] + [pruned[k] for k in names], args.threads, graph.input_shapes, runs=args.runs)
    base, rest = times[0], times[1:]
    op_of = {n.name: n.op for d in {id(p.dep): p.dep for p in plans.values()}.values() for n in d.graph.nodes}
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0] * (1 + len(names)))
    for i, t in enumerate(times):
        for name, us in t.items():
            by_op[op_of.get(name, "(unowned)")][i] += us
    total = [sum(t.values()) for t in times]
    print(f"{args.model} at {args.target:g}, {args.threads} threads, fastest of {args.runs} interleaved runs, "
          f"load {load:.2f} (1 min)\n")
    print("| op | dense ms | share | " + " | ".join(f"{k} ms (x dense)" for k in names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for op, v in sorted(by_op.items(), key=lambda kv: -kv[1][0]):
        cells = " | ".join(f"{v[i + 1] / 1000:.2f} ({v[i + 1] / v[0]:.2f})" if v[0] else f"{v[i + 1] / 1000:.2f}"
                           for i in range(len(names)))
        print(f"| {op} | {v[0] / 1000:.2f} | {v[0] / total[0]:.3f} | {cells} |")
    cells = " | ".join(f"{total[i + 1] / 1000:.2f} ({total[i + 1] / total[0]:.2f})" for i in range(len(names)))
    print(f"| total | {total[0] / 1000:.2f} | 1.000 | {cells} |\n")
    index = {n.name: n.index for n in graph.nodes}
    latency = None
    if "latency" in names:
        latency = build_profiled_model(dep, args.threads, cache_dir() / "latency", round_to=8)
    head = " | ".join(f"{k} us (work)" for k in names)
    print(f"| node | op | out shape | dense us | {head} |" + (" predicted us (latency) |" if latency else ""))
    print("|---|---|---|---|" + "---|" * len(names) + ("---|" if latency else ""))
    for name in sorted(base, key=base.get, reverse=True)[: args.top]:
        node = index.get(name)
        shape = graph.shape(graph.nodes[node].outputs[0]) if node is not None else None
        cells = " | ".join(f"{r.get(name, 0):.0f} ({works[k][name]:.2f})" if name in works[k] else f"{r.get(name, 0):.0f} (-)"
                           for k, r in zip(names, rest))
        pred = ""
        if latency is not None and node is not None and node in latency.curves and name in works["latency"]:
            pred = f" {latency.curves[node].at(works['latency'][name]):.0f} |"
        print(f"| {name or '(unowned)'} | {op_of.get(name, '-')} | {shape} | {base[name]:.0f} | {cells} |{pred}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
