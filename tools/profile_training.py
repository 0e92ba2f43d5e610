#!/usr/bin/env python3
"""Where one ONNX Runtime training step spends its time: ORT's own profiler over the session that
tools/bench_training.py times (the NCHWc-lowered training graph, IOBinding, fed filters).

    python tools/profile_training.py --net resnet18 [--steps 3] [--top 25] [--by-shape] [--torch]
    python tools/bench_training.py --net resnet18 --profile      (the same, from the benchmark)

Prints per op type (as ORT ran it: fused Conv, ReorderInput, ...) its share of the step, split into
forward and backward nodes (backward nodes are the ones the gradient rules emitted, named grad/...),
then the slowest single nodes with their output shapes. Per-node times are medians over --steps
profiled steps after one warm-up. --torch adds torch.profiler's table for the same step in PyTorch.
Figures move with the machine's load (shared machine): read the shares, not the milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import bench_training  # noqa: E402
from onnxprune.autodiff import runner  # noqa: E402


def profiled_session(folder: str):
    """A stand-in for load.runtime.session with ORT's profiler on (same threading as session())."""
    def make(model, threads: int = 0, **_):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads or 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(folder, "train")
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return make


def node_times(trace: list[dict], runs: int) -> dict[str, tuple[str, str, float]]:
    """node name -> (op type, output shapes, median microseconds over the last `runs` runs)."""
    per_node: dict[str, list[float]] = defaultdict(list)
    info = {}
    for event in trace:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        per_node[name].append(event["dur"])
        args = event.get("args", {})
        shapes = [list(d.values())[0] for d in args.get("output_type_shape", [])]
        info[name] = (args.get("op_name", "?"), str(shapes))
    return {n: (*info[n], statistics.median(t[-runs:])) for n, t in per_node.items()}


def report(times: dict[str, tuple[str, str, float]], top: int) -> None:
    total = sum(t for _, _, t in times.values())
    print(f"ORT step (sum of node times): {total / 1e3:.0f} ms")
    by_op: dict[tuple[str, str], float] = defaultdict(float)
    for name, (op, _, t) in times.items():
        by_op[(op, "backward" if name.startswith("grad/") else "forward")] += t
    print(f"  {'op':28s} {'part':9s} {'ms':>8s} {'share':>6s}")
    for (op, part), t in sorted(by_op.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {op:28s} {part:9s} {t / 1e3:8.1f} {100 * t / total:5.1f}%")
    print("slowest nodes:")
    for name, (op, shapes, t) in sorted(times.items(), key=lambda kv: -kv[1][2])[:top]:
        print(f"  {t / 1e3:7.1f} ms {op:20s} {name[:48]:48s} -> {shapes}")


def torch_report(case, steps: int) -> None:
    import torch
    trainer = bench_training.TorchTrainer(case, 1)
    trainer.step(case.x, case.y)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.step(case.x, case.y)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def op_detail(times: dict[str, tuple[str, str, float]], ops: list[str]) -> None:
    """Per (op, output shapes) of the given op types: node count, total ms and ns per output element
    (a copy-bound op's speed: ORT's strided Slice, Transpose and Concat differ by 10x by shape)."""
    rows: dict[tuple[str, str], list[float]] = defaultdict(list)
    for name, (op, shapes, t) in times.items():
        if op in ops:
            rows[(op + (" (grad)" if name.startswith("grad/") else ""), shapes)].append(t)
    print(f"nodes of {', '.join(ops)}:")
    for (op, shapes), ts in sorted(rows.items(), key=lambda kv: -sum(kv[1])):
        elements = sum(int(np.prod(s)) for s in json.loads(shapes)) if shapes.startswith("[[") else 0
        per = 1e3 * sum(ts) / (len(ts) * elements) if elements else float("nan")
        print(f"  {sum(ts) / 1e3:7.1f} ms {len(ts):4d}x {op:24s} -> {shapes}  {per:.2f} ns/element")


def profile_case(case, steps: int = 3, top: int = 25, by_shape: bool = False, with_torch: bool = False,
                 ops: list[str] | None = None) -> None:
    """Profile `steps` ORT training steps of a bench_training Case (after one warm-up) and print."""
    with tempfile.TemporaryDirectory() as folder:
        made = runner.session
        runner.session = profiled_session(folder)
        try:
            trainer = bench_training.OrtTrainer(case, 1)
            for _ in range(steps + 1):
                trainer.step(case.x, case.y)
            path = trainer.step_fn.sess.end_profiling()
        finally:
            runner.session = made
        trace = json.loads(Path(path).read_text())
    times = node_times(trace, steps)
    report(times, top)
    if by_shape:
        per_shape: dict[tuple[str, str], float] = defaultdict(float)
        for name, (op, shapes, t) in times.items():
            per_shape[(op + (" (grad)" if name.startswith("grad/") else ""), shapes)] += t
        print("per op and output shapes:")
        for (op, shapes), t in sorted(per_shape.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {t / 1e3:7.1f} ms {op:24s} -> {shapes}")
    if ops:
        op_detail(times, ops)
    if with_torch:
        torch_report(case, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=("digits", "resnet18"), default="resnet18")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--torch", action="store_true", help="also profile PyTorch's step")
    parser.add_argument("--ops", help="also every node of these op types (comma-separated) by output shape")
    parser.add_argument("--by-shape", action="store_true", help="also totals per (op, output shapes)")
    args = parser.parse_args()
    batch = args.batch or (64 if args.net == "digits" else 16)
    case = (bench_training.digits_case((32, 64, 64), batch) if args.net == "digits"
            else bench_training.resnet_case(batch, args.size))
    profile_case(case, args.steps, args.top, args.by_shape, args.torch, args.ops.split(",") if args.ops else None)


if __name__ == "__main__":
    main()
