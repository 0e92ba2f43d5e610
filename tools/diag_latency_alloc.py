#!/usr/bin/env python3
"""Which allocation keeps the most MACs at a predicted latency? The latency model alone, no timing.

    python tools/diag_latency_alloc.py --models light_densenet121,nudenet_320n --target 0.5 --threads 2

For each model (l2 scores, no data, round_to 8, the profiled latency model `--target-latency` uses,
cached), each allocation's plan is searched to `--target` of the *predicted* dense latency, and the
MACs it keeps are printed: uniform shares, the global MACs ranking (gamma 0) and the latency
ranking (importance / time saved per MAC, gamma 1, what --target-latency ranks by). The model
predicted measured latencies within 0.02-0.04 on DenseNet and NudeNet (docs/benchmarks.md), so an
allocation that keeps more MACs here is the one to time. Nothing is built or timed: the load does
not change these figures (only the cached profile's, taken once).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402

from onnxprune.couple.dependency import build_dependency  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402
from onnxprune.load import zoo  # noqa: E402
from onnxprune.load.fold import fold_constants  # noqa: E402
from onnxprune.load.zoo import cache_dir  # noqa: E402
from onnxprune.score.criteria import score  # noqa: E402
from onnxprune.select.latency_profile import build_profiled_model  # noqa: E402
from onnxprune.select.plan import search_ratio, select_global, select_uniform  # noqa: E402

ROUND_TO = 8


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="light_densenet121,light_shufflenet,nudenet_320n,light_resnet50")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    print("| model | allocation | MACs kept at the predicted target | predicted |")
    print("|---|---|---|---|")
    for name in args.models.split(","):
        model = onnx.load(zoo.fetch(name))
        dep = build_dependency(ModelGraph(fold_constants(model)))
        latency = build_profiled_model(dep, args.threads, cache_dir() / "latency", round_to=ROUND_TO)
        scores = score(dep, "l2")
        per_mac = latency.channel_costs(per_mac=True)
        selectors = {"uniform": lambda r: select_uniform(dep, scores, r, ROUND_TO),
                     "global MACs ranking (gamma 0)": lambda r: select_global(dep, scores, r, ROUND_TO),
                     "latency ranking (gamma 1)": lambda r: select_global(dep, scores, r, ROUND_TO,
                                                                           channel_costs=per_mac)}
        for label, select in selectors.items():
            plan = search_ratio(select, lambda p: latency.kept(p.removed), args.target, scores=scores, round_to=ROUND_TO)
            macs = latency.costs.macs_after(plan.removed) / latency.costs.total_macs
            print(f"| {name} | {label} | {macs:.3f} | {latency.kept(plan.removed):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
