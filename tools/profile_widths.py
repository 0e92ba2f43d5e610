#!/usr/bin/env python3
"""Where a model spends its time, dense and uniformly pruned: ONNX Runtime's own profiler, per op type.

    python tools/profile_widths.py light_inception_v1 --shares 0,0.25,0.5 --threads 2

Each width is one session with `enable_profiling` (the full graph, after ORT's fusions and NCHWc
reorders), run --runs times; per-node times are the median over runs. Prints, per op type as ORT ran
it (fused Conv, ReorderInput, Concat, ...), its share of the dense time and its time at each width
relative to dense, next to the MACs kept. Figures move with the machine's load (shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from onnxprune.apply.rewrite import apply_plan  # noqa: E402
from onnxprune.couple.dependency import build_dependency  # noqa: E402
from onnxprune.graph.cost import count_macs  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402
from onnxprune.load import zoo  # noqa: E402
from onnxprune.load.data import synthetic_dataset  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.select.plan import select_uniform  # noqa: E402


def profile(model: onnx.ModelProto, threads: int, runs: int) -> dict[str, tuple[str, float]]:
    """node name -> (op as ORT ran it, median microseconds over `runs`)."""
    with tempfile.TemporaryDirectory() as folder:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(folder, "p")
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feed = next(synthetic_dataset(sess, ModelGraph(model).input_shapes, samples=1).batches(1))
        for _ in range(5):
            sess.run(None, feed)
        for _ in range(runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    times: dict[str, list[float]] = defaultdict(list)
    ops = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            times[name].append(e["dur"])
            ops[name] = e["args"].get("op_name", "?")
    return {n: (ops[n], float(np.median(v[-runs:]))) for n, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--shares", default="0,0.25,0.5")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--round-to", type=int, default=8)
    args = ap.parse_args(argv)
    path = zoo.fetch(args.model) if not os.path.exists(args.model) else args.model
    dense = onnx.load(path)
    dep = build_dependency(ModelGraph(dense))
    dense_macs = count_macs(ModelGraph(dense))
    per_share = {}
    for share in [float(s) for s in args.shares.split(",")]:
        model = dense if share == 0 else apply_plan(select_uniform(dep, np.zeros(dep.num_channels), share, args.round_to))
        prof = profile(model, args.threads, args.runs)
        by_op: dict[str, float] = defaultdict(float)
        for op, us in prof.values():
            by_op[op] += us
        per_share[share] = (count_macs(ModelGraph(model)) / dense_macs, by_op, sum(by_op.values()))
    _, base, total = per_share[min(per_share)]
    print(f"{args.model}: dense {total / 1000:.2f} ms of node time, {args.threads} threads, median of {args.runs} runs")
    head = " | ".join(f"share {s:g} (MACs {m:.2f}, time {t / total:.2f})" for s, (m, _, t) in per_share.items())
    print(f"| op | share of dense time | {head} |")
    for op in sorted(base, key=base.get, reverse=True):
        cells = " | ".join(f"{v[1].get(op, 0) / base[op]:.2f}" if base[op] else "-" for v in per_share.values())
        print(f"| {op} | {base[op] / total:.3f} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
