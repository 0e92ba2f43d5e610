#!/usr/bin/env python3
"""Nodes vs wall time vs peak RSS of the default flow on generated chains (issue 11's big graphs).

For each size, `tools/make_chain.py N` writes a chain of Conv-Relu-Conv-Add blocks, then one fresh
process runs exactly the command a user would run,

    python -m onnxprune prune chain.onnx -o out.onnx --ratio 0.3 --force -q

(analysis, plan, rewrite, checker, ONNX Runtime validation, fidelity, latency, report), and its own
wall time, CPU time (user + system) and peak RSS (os.wait4's rusage) are printed as a Markdown table
with the load average at the start of each run. CPU seconds are steadier than wall seconds on a
shared machine.

    python tools/bench_graph_scale.py                          # 5,000 to 100,000 nodes
    python tools/bench_graph_scale.py --sizes 20000 200000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_size(nodes: int, folder: str) -> dict:
    """Generate a chain of `nodes` nodes and prune it in a fresh process; that process's figures."""
    model, out = os.path.join(folder, f"chain_{nodes}.onnx"), os.path.join(folder, f"out_{nodes}.onnx")
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_chain.py"), str(nodes), model], check=True)
    cmd = [sys.executable, "-m", "onnxprune", "prune", model, "-o", out, "--ratio", "0.3", "--force", "-q"]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the largest child's so far
        wall = time.perf_counter() - start
        err.seek(0)
        errors = err.read()
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise RuntimeError(f"chain of {nodes}: exit {code}: {errors[-1000:]}")
    import onnx
    kept = len(onnx.load(out, load_external_data=False).graph.node)
    for path in (model, out):
        os.unlink(path)
    return {"nodes": nodes, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024,
            "load": load, "out_nodes": kept}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[5000, 10000, 25000, 50000, 100000])
    args = parser.parse_args(argv)
    print("| nodes | wall s | CPU s | CPU µs/node | peak RSS MB | KB/node | load avg |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="onnxprune-scale-") as folder:
        for n in args.sizes:
            r = run_size(n, folder)
            print(f"| {r['nodes']:,} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['cpu'] / n * 1e6:.0f} | "
                  f"{r['peak_mb']:.0f} | {r['peak_mb'] * 1024 / n:.1f} | {r['load']:.1f} |", flush=True)
    print(f"\n{os.cpu_count()} cores; one fresh process per size; peak RSS includes the imports.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
