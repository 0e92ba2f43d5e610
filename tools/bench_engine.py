#!/usr/bin/env python3
"""The engine's own cost: inspect + prune (no ONNX Runtime benchmark) on light_resnet50 and chain graphs.

Each case runs in a fresh subprocess, so its peak memory (getrusage max RSS, minus the RSS after
imports) is its own. Stages timed: load, fold (constant folding), graph (shapes and constants),
couple (groups and barriers: what `inspect` shows), select (L2 scores, ratio 0.3) and rewrite
(slicing, shape fixes, cleanup). The chain graphs are residual Conv-Relu-Conv-Add blocks of 16
channels on an 8x8 map, so their cost is the node count, not the weights.

    python tools/bench_engine.py                    # resnet50 and chains of 1250, 2500, 5000 nodes
    python tools/bench_engine.py --sizes 1250 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

STAGES = ("load", "fold", "graph", "couple", "select", "rewrite")


def chain_model(nodes: int, channels: int = 16, size: int = 8):
    """A residual chain of about `nodes` nodes: blocks of Conv-Relu-Conv-Add."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph_nodes, inits, x = [], [], "x"
    for b in range(max(1, nodes // 4)):
        names = [f"b{b}_{k}" for k in range(4)]
        for k in (0, 2):
            inits.append(numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.1,
                                                 f"w{b}_{k}"))
            inits.append(numpy_helper.from_array(np.zeros(channels, np.float32), f"c{b}_{k}"))
        graph_nodes += [helper.make_node("Conv", [x, f"w{b}_0", f"c{b}_0"], [names[0]], pads=[1] * 4),
                        helper.make_node("Relu", [names[0]], [names[1]]),
                        helper.make_node("Conv", [names[1], f"w{b}_2", f"c{b}_2"], [names[2]], pads=[1] * 4),
                        helper.make_node("Add", [x, names[2]], [names[3]])]
        x = names[3]
    graph_nodes.append(helper.make_node("Conv", [x, "head", "head_b"], ["y"]))
    inits += [numpy_helper.from_array(rng.standard_normal((4, channels, 1, 1)).astype(np.float32), "head"),
              numpy_helper.from_array(np.zeros(4, np.float32), "head_b")]
    graph = helper.make_graph(graph_nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, size, size])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def measure(path: str) -> dict:
    """Run every stage once on the model at `path`; seconds per stage and peak RSS above the start."""
    from onnxprune.couple.dependency import build_dependency
    from onnxprune.load.fold import fold_constants
    from onnxprune.graph.model_graph import ModelGraph
    from onnxprune.score.criteria import score
    from onnxprune.load.model import load_model
    from onnxprune.select.plan import select_uniform
    from onnxprune.apply.rewrite import apply_plan
    import onnx_graphsurgeon  # noqa: F401  (lazily imported libraries count in the baseline, not the peak)
    import onnxruntime  # noqa: F401

    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, t = {}, time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[stage] = now - t
        t = now

    model = load_model(path)
    lap("load")
    folded = fold_constants(model)
    lap("fold")
    g = ModelGraph(folded)
    lap("graph")
    dep = build_dependency(g)
    lap("couple")
    plan = select_uniform(dep, score(dep, "l2"), 0.3, round_to=1)
    lap("select")
    pruned = apply_plan(plan)
    lap("rewrite")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"times": times, "nodes": len(model.graph.node), "peak_mb": (peak_kb - base_kb) / 1024,
            "file_mb": os.path.getsize(path) / 2**20, "folded_mb": folded.ByteSize() / 2**20,
            "pruned_nodes": len(pruned.graph.node), "groups": len(dep.groups)}


def run_case(path: str, repeat: int) -> dict:
    """The best of `repeat` fresh-process runs (the machine is noisy; the minimum is the engine's cost)."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--child", path], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: sum(r["times"].values()))
    best["peak_mb"] = min(r["peak_mb"] for r in runs)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1250, 2500, 5000], help="chain graph node counts")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs per case (best is shown)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child)))
        return 0

    import onnx

    from onnxprune.load import zoo

    cases = [("light_resnet50", str(zoo.fetch("light_resnet50")))]
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = os.path.join(tmp, f"chain_{n}.onnx")
            onnx.save(chain_model(n), path)
            cases.append((f"chain {n}", path))
        rows = [(name, run_case(path, args.repeat)) for name, path in cases]
    head = ["case", "nodes", "groups"] + [f"{s} s" for s in STAGES] + ["total s", "µs/node", "peak MB", "file MB",
                                                                           "folded MB"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, r in rows:
        total = sum(r["times"].values())
        cells = [name, str(r["nodes"]), str(r["groups"])] + [f"{r['times'][s]:.3f}" for s in STAGES]
        cells += [f"{total:.2f}", f"{total / r['nodes'] * 1e6:.0f}", f"{r['peak_mb']:.0f}", f"{r['file_mb']:.2f}",
                  f"{r['folded_mb']:.1f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"\nBest of {args.repeat} fresh processes per case; peak MB is max RSS above the RSS after imports.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
