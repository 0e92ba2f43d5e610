#!/usr/bin/env python
"""Run `make demo`'s prune command several times and print the spread of what it reports.

    PYTHONPATH=$PWD python tools/demo_runs.py [--runs 5]

The command is read from the Makefile's `demo` target (so this measures exactly what a new user
runs), with its output and report redirected to a scratch folder. Each run prints the dense and
pruned latency p50, the paired latency ratio (median of per-round ratios of interleaved ONNX
Runtime runs, as the report computes it), accuracy before and after, the MACs fraction, and the
paired ratio that `onnxprune bench` measures on the same two files in a fresh process; the last lines give min / median / max over the runs. Latency moves on a shared machine: run it more
than once.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def demo_command(makefile: Path = ROOT / "Makefile") -> list[str]:
    """The arguments after `onnxprune` in the Makefile's demo recipe (backslash lines joined)."""
    lines = makefile.read_text().replace("\\\n", " ").splitlines()
    start = lines.index(next(line for line in lines if line.startswith("demo:")))
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        words = shlex.split(line)
        if words and words[0].endswith("/onnxprune"):
            return words[1:]
    raise ValueError(f"{makefile}: the demo target runs no onnxprune command")


def with_option(args: list[str], flag: str, value: str) -> list[str]:
    """`args` with `flag`'s value replaced (appended if absent)."""
    if flag in args:
        i = args.index(flag)
        return args[:i + 1] + [value] + args[i + 2:]
    return args + [flag, value]


def run_once(args: list[str], scratch: Path, index: int, bench_rounds: int) -> dict:
    """One demo run, then `onnxprune bench` on the same pair in a fresh process (fresh sessions)."""
    report, pruned = scratch / f"report{index}.json", scratch / f"pruned{index}.onnx"
    args = with_option(with_option(args, "-o", str(pruned)), "--report", str(report))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onnxprune", *args, "-q"], cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    r = json.loads(report.read_text())
    bench = subprocess.run([sys.executable, "-m", "onnxprune", "bench", args[1], str(pruned), "--data", args[args.index("--data") + 1],
                            "--rounds", str(bench_rounds), "--warmup", "10", "--no-memory", "--no-energy", "--json"],
                           cwd=ROOT, check=True, capture_output=True, text=True)
    b = json.loads(bench.stdout)["models"]
    return {"seconds": seconds, "dense_ms": r["before"]["latency_ms"], "pruned_ms": r["after"]["latency_ms"],
            "ratio": r["latency_ratio"], "bench_ratio": b[1]["latency_ratio"],
            "acc_dense": r["fidelity"]["accuracy_dense"], "acc_pruned": r["fidelity"]["accuracy_pruned"],
            "macs": r["after"]["macs"] / r["before"]["macs"]}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bench-rounds", type=int, default=100, help="rounds of the separate `onnxprune bench` check")
    opts = ap.parse_args(argv)
    args = demo_command()
    print("onnxprune " + shlex.join(args))
    print(f"{'run':>3} {'seconds':>8} {'dense ms':>9} {'pruned ms':>10} {'paired':>7} {'acc dense':>10} "
          f"{'acc pruned':>11} {'MACs':>6} {'bench':>6}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(opts.runs):
            rows.append(run_once(args, Path(tmp), i, opts.bench_rounds))
            r = rows[-1]
            print(f"{i + 1:>3} {r['seconds']:>8.1f} {r['dense_ms']:>9.3f} {r['pruned_ms']:>10.3f} {r['ratio']:>7.3f} "
                  f"{r['acc_dense']:>10.4f} {r['acc_pruned']:>11.4f} {r['macs']:>6.3f} {r['bench_ratio']:>6.3f}", flush=True)
    for key in ("ratio", "bench_ratio", "dense_ms", "pruned_ms", "acc_pruned", "seconds"):
        values = np.array([r[key] for r in rows])
        print(f"{key:>10}: min {values.min():.4f}  median {np.median(values):.4f}  max {values.max():.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
