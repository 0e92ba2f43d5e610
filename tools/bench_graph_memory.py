#!/usr/bin/env python3
"""Where a big graph's memory goes: RSS added by each piece a prune of a generated chain holds, each
measured in a fresh process (so one piece's freed heap does not hide the next one's).

    python tools/bench_graph_memory.py                 # chains of 25,000 and 50,000 nodes
    python tools/bench_graph_memory.py --sizes 100000

Pieces: the parsed proto; ModelGraph (shapes, producers, consumers); the channel dependency; an ONNX
Runtime session built as `load/runtime.session` builds it for graphs with many initializers (saving
the optimized model, which keeps ORT from removing initializers one linear search at a time) and a
plain one (ORT_ENABLE_BASIC, without ConstantSharing, nothing saved). "retained" is the RSS growth
after glibc's malloc_trim, "peak" the growth of the high-water mark (VmHWM, reset first where the
kernel allows) while the piece is built; CPU seconds are the process's own.

    python tools/bench_graph_memory.py --phases --sizes 200000

runs the whole `onnxprune prune chain.onnx -o out.onnx --ratio 0.3` in one process instead, with RSS
sampled every 10 ms, and prints each stage (nested stages indented) with the RSS when it starts and
ends, the highest RSS while it runs and its wall seconds: where a whole prune's peak is.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIECES = ("proto", "graph", "dependency", "session_saved", "session_plain")


def _kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _settle() -> int:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _kb("VmRSS")


def child(path: str, piece: str) -> dict:
    """Build everything `piece` needs first, then measure only `piece`."""
    import onnx
    import onnxruntime as ort

    from onnxprune.couple.dependency import build_dependency
    from onnxprune.graph.model_graph import ModelGraph
    from onnxprune.load import runtime

    held = []
    model = onnx.load(path) if piece != "proto" else None
    if piece == "dependency":
        held.append(ModelGraph(model, None))
    base = _settle()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    start = time.process_time()
    if piece == "proto":
        held.append(onnx.load(path))
    elif piece == "graph":
        held.append(ModelGraph(model, None))
    elif piece == "dependency":
        held.append(build_dependency(held[0]))
    elif piece == "session_saved":
        held.append(runtime.session(model))
    else:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        held.append(ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                                         disabled_optimizers=runtime.QUADRATIC_OPTIMIZERS))
    cpu = time.process_time() - start
    peak = _kb("VmHWM")
    return {"retained_mb": (_settle() - base) / 1024, "peak_mb": max(peak - base, 0) / 1024, "cpu_s": cpu}


# (module, attribute, label): each stage a prune goes through, wrapped where its caller looks it up
STAGES = (("onnxprune.api", "prepare", "prepare"), ("onnxprune.api", "choose_plan", "plan"),
          ("onnxprune.api", "record_dense", "record dense"), ("onnxprune.api", "apply_and_recover", "rewrite"),
          ("onnxprune.stages", "check_valid", "checker"), ("onnxprune.api", "evaluate", "evaluate"),
          ("onnxprune.check.evaluate", "session", "dense session"),
          ("onnxprune.check.validate", "session", "pruned session"),
          ("onnxprune.check.evaluate", "ModelGraph", "cost graph"),
          ("onnxprune.report.outputs", "deliver", "deliver"), ("onnxprune.load.model", "save_model_atomic", "save"),
          ("onnxprune.lean_stage", "evaluate_lean", "lean evaluation"), ("onnxprune.lean_stage", "model_costs", "costs"),
          ("onnxprune.lean_stage", "check_valid", "checker"),
          ("onnxprune.lean_stage", "Parked", "park"), ("onnxprune.lean_stage", "record_dense", "record dense"),
          ("onnxprune.lean_stage", "run_checks", "runtime checks"))


def phases(path: str) -> list[dict]:
    """Prune `path` in this process, RSS sampled in a thread; one row per stage entered, in order."""
    import importlib
    import threading

    rows: list[dict] = []
    open_rows: list[dict] = []
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    statm = os.open("/proc/self/statm", os.O_RDONLY)

    def rss() -> int:  # pread: the sampler thread and the stages read it at once
        return int(os.pread(statm, 256, 0).split()[1]) * page_kb

    def sample(stop: threading.Event) -> None:
        while not stop.wait(0.01):
            now = rss()
            for row in list(open_rows):
                row["peak"] = max(row["peak"], now)

    def wrap(fn, label):
        def timed(*args, **kwargs):
            row = {"stage": label, "depth": len(open_rows), "start": rss(), "t": time.perf_counter()}
            row["peak"] = row["start"]
            rows.append(row)
            open_rows.append(row)
            try:
                return fn(*args, **kwargs)
            finally:
                open_rows.remove(row)
                row["end"], row["t"] = rss(), time.perf_counter() - row["t"]
                row["peak"] = max(row["peak"], row["end"])
        return timed

    for module, name, label in STAGES:
        mod = importlib.import_module(module)
        setattr(mod, name, wrap(getattr(mod, name), label))
    from onnxprune.cli.main import main as cli
    stop = threading.Event()
    thread = threading.Thread(target=sample, args=(stop,), daemon=True)
    thread.start()
    out = path + ".out.onnx"
    total = {"stage": "whole prune", "depth": 0, "start": rss(), "t": time.perf_counter()}
    total["peak"] = total["start"]
    open_rows.append(total)
    code = cli(["prune", path, "-o", out, "--ratio", "0.3", "--force", "-q"])
    stop.set()
    thread.join()
    total.update(end=rss(), t=time.perf_counter() - total["t"], peak=max(total["peak"], _kb("VmHWM")))
    if code:
        raise SystemExit(f"prune exited {code}")
    return rows + [total]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[25000, 50000])
    parser.add_argument("--phases", action="store_true", help="a whole prune's RSS, stage by stage")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(phases(args.child[0]) if args.child[1] == "phases" else child(*args.child)))
        return 0
    if args.phases:
        return _print_phases(args.sizes)
    print("| nodes | piece | retained MB | KB/node | peak MB | CPU s |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = os.path.join(tmp, f"chain_{n}.onnx")
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_chain.py"), str(n), path], check=True)
            for piece in PIECES:
                done = subprocess.run([sys.executable, __file__, "--child", path, piece], capture_output=True,
                                      text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {n:,} | {piece} | {r['retained_mb']:.0f} | {r['retained_mb'] * 1024 / n:.1f} | "
                      f"{r['peak_mb']:.0f} | {r['cpu_s']:.1f} |", flush=True)
    return 0


def _print_phases(sizes: list[int]) -> int:
    print("| nodes | stage | RSS at start MB | peak MB | RSS at end MB | wall s |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = os.path.join(tmp, f"chain_{n}.onnx")
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_chain.py"), str(n), path], check=True)
            load = os.getloadavg()[0]
            done = subprocess.run([sys.executable, __file__, "--child", path, "phases"], capture_output=True,
                                  text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            for r in json.loads(done.stdout.strip().splitlines()[-1]):
                print(f"| {n:,} | {'. ' * r['depth']}{r['stage']} | {r['start'] / 1024:.0f} | {r['peak'] / 1024:.0f} | "
                      f"{r['end'] / 1024:.0f} | {r['t']:.1f} |", flush=True)
            print(f"\nload average {load:.1f} at the start of the {n:,}-node run", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
