#!/usr/bin/env python3
"""Training steps/s of two onnxprune checkouts on the same network, interleaved (before / after).

    python tools/bench_training_ab.py --before /path/to/other/checkout [--net resnet18] [--rounds 10] [--steps 2]

Each checkout trains in its own long-lived worker process (its `onnxprune` and `tools/bench_training.py`
first on sys.path); the parent asks them in turn for `--steps` ORT training steps (same network,
batch, AdamW as tools/bench_training.py) and reports the median of the per-round ratios after/before,
in wall clock and in each worker's own CPU time. PyTorch is not involved: on a shared machine this
isolates what a change did from the load, which moves both sides of an ORT/PyTorch ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = """
import json, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + "/tools")
import bench_training as b
case = b.digits_case((32, 64, 64), {batch}) if {net!r} == "digits" else b.resnet_case({batch}, {size})
trainer = b.OrtTrainer(case, 1)
for _ in range(2):
    trainer.step(case.x, case.y)
print("ready", flush=True)
for line in sys.stdin:
    steps = int(line)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.step(case.x, case.y)
    print(json.dumps([steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu)]), flush=True)
"""


def worker(root: Path, net: str, batch: int, size: int) -> subprocess.Popen:
    code = WORKER.format(root=str(root), net=net, batch=batch, size=size)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def ask(proc: subprocess.Popen, steps: int) -> list[float]:
    proc.stdin.write(f"{steps}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the other checkout (its root folder)")
    parser.add_argument("--after", default=str(ROOT), help="default: this checkout")
    parser.add_argument("--net", choices=("digits", "resnet18"), default="resnet18")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int)
    args = parser.parse_args()
    batch = args.batch or (64 if args.net == "digits" else 16)
    steps = args.steps or (20 if args.net == "digits" else 2)
    procs = {name: worker(Path(root).resolve(), args.net, batch, args.size)
             for name, root in (("before", args.before), ("after", args.after))}
    rates = {name: [] for name in procs}
    try:
        for _ in range(args.rounds):
            for name, proc in procs.items():
                rates[name].append(ask(proc, steps))
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    print(f"{args.net}, batch {batch}, {args.rounds} interleaved rounds of {steps} ORT steps")
    for name in procs:
        print(f"  {name:6s} wall {statistics.median(r[0] for r in rates[name]):7.3f} steps/s, "
              f"CPU {statistics.median(r[1] for r in rates[name]):7.3f} steps/s")
    for i, kind in enumerate(("wall", "CPU")):
        ratios = sorted(a[i] / b[i] for a, b in zip(rates["after"], rates["before"]))
        quart = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(f"  after / before ({kind}): {statistics.median(ratios):.3f}x "
              f"(quartiles {quart[0]:.3f}-{quart[2]:.3f}, range {ratios[0]:.3f}-{ratios[-1]:.3f})")


if __name__ == "__main__":
    main()
