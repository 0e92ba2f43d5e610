#!/usr/bin/env python3
"""Benchmark: time and peak memory of the default data-aware prune, as a user runs it, on real models.

For each task model (tools/tasks.py: its dense model with the task's static input shape, and its
calibration set written once as a .npz) a child process runs

    python -m onnxprune prune DENSE.onnx -o OUT.onnx --target-macs LEVEL --calib CALIB.npz --input-shape ...

(with `--extra` flags appended, e.g. `--recover lstsq`) and reports its wall time and peak resident set size
(`os.wait4` rusage of that child). `--profile DIR` runs the child under cProfile and prints the top entries
by cumulative time, which is how the time of each stage was found.

    python tools/bench_calib_speed.py --models ppocr_cls,ddddocr_common --calib-n 32
    python tools/bench_calib_speed.py --models ppocr_rec --profile /tmp/prof

Prints a Markdown table; a failed run is a row with its last error line (exit 0 either way).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))


def inputs(task, work: Path, n: int) -> tuple[Path, Path, list[str]]:
    """(dense model path, calibration .npz path, --input-shape flags), written once per task and size."""
    import numpy as np
    import onnx

    dense, calib = work / f"{task.name}.onnx", work / f"{task.name}_calib{n}.npz"
    if not dense.exists():
        onnx.save(task.model(), dense)
    if not calib.exists():
        np.savez(calib, **task.calibration(n))
    flags = []
    for name, shape in (task.input_shapes() or {}).items():
        flags += ["--input-shape", f"{name}:{'x'.join(map(str, shape))}"]
    return dense, calib, flags


def weights_mb(path: Path) -> float:
    """Bytes of the model's initializers and Constant tensors (the weights a prune must hold once), in MB."""
    import onnx
    from onnxprune.load.spill import raw_bytes
    model = onnx.load(str(path))
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant"
                                               for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    return sum(raw_bytes(t) or t.ByteSize() for t in tensors) / 2 ** 20


def run(cmd: list[str], limit_gb: float) -> dict:
    """Wall seconds, peak RSS (MB) and exit status of one child, capped at `limit_gb` of address space."""
    import resource

    def cap():
        size = int(limit_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=cap,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = {"seconds": time.time() - t0, "peak_mb": usage.ru_maxrss / 1024, "exit": proc.returncode}
    if proc.returncode != 0:
        out["error"] = (err.strip().splitlines() or ["no output"])[-1][:160]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="ppocr_cls,ddddocr_common,ppocr_rec,nudenet_320n,ppocr_det")
    ap.add_argument("--level", type=float, default=0.8, help="--target-macs")
    ap.add_argument("--calib-n", type=int, default=32, help="calibration samples")
    ap.add_argument("--extra", default="", help="more prune flags, e.g. '--recover lstsq'")
    ap.add_argument("--work", default="/tmp/onnxprune_calib_speed", help="where models and .npz files go")
    ap.add_argument("--limit-gb", type=float, default=8.0, help="address-space cap per child")
    ap.add_argument("--profile", help="write cProfile stats here and print the top of each")
    args = ap.parse_args(argv)
    import tasks

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"## Default data-aware prune: --target-macs {args.level:g}, {args.calib_n} calibration samples "
          f"{args.extra}\n")
    print("| model | weights MB | s | peak RSS MB | above weights MB | load (1 min) | exit |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name in args.models.split(","):
        task = tasks.get(name)
        dense, calib, flags = inputs(task, work, args.calib_n)
        head = [sys.executable, "-m"]
        prof = None
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            prof = Path(args.profile) / f"{name}.prof"
            head = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m"]
        cmd = head + ["onnxprune", "prune", str(dense), "-o", str(work / f"{name}_pruned.onnx"),
                      "--target-macs", str(args.level), "--calib", str(calib), "--force", *flags, *args.extra.split()]
        r = run(cmd, args.limit_gb)
        status = "ok" if r["exit"] == 0 else f"exit {r['exit']}: {r.get('error', '')}".replace("|", "/")
        weights = weights_mb(dense)
        print(f"| {name} | {weights:.1f} | {r['seconds']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] - weights:.0f} | "
              f"{os.getloadavg()[0]:.1f} | {status} |", flush=True)
        if prof and prof.exists():
            import pstats
            pstats.Stats(str(prof), stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
