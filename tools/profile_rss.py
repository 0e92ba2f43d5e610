#!/usr/bin/env python3
"""Where a CLI run's memory peak is: run `onnxprune ARGS...` in this process, sample the RSS (anonymous
and file-backed apart, from /proc/self/status) every 20 ms in a thread, and print the main thread's
stack at each new high-water mark above the last one printed by --step MB, then the peak.

    OPENBLAS_NUM_THREADS=1 python tools/profile_rss.py -- prune big.onnx -o out/big.onnx --ratio 0.3 --calib c.npz
    python tools/profile_rss.py --step 100 -- prune chain.onnx -o out.onnx --ratio 0.3

File-backed pages are the memory-mapped weights (read-only maps of the model's external data and of
work files): they count toward the RSS as soon as they are touched, and leave it when unmapped.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _status() -> dict[str, int]:
    """RSS, anonymous and file-backed resident memory of this process, MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1]) // 1024
    return out


def _stack(main_id: int) -> str:
    frame = sys._current_frames().get(main_id)
    if frame is None:
        return ""
    mine = [f for f in traceback.extract_stack(frame) if "onnxprune" in f.filename or "numpy" in f.filename]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(mine[-8:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=float, default=200, help="print a stack each time the peak grows this many MB")
    parser.add_argument("--every", type=float, default=0.02, help="sampling interval, seconds")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="onnxprune's arguments (after --)")
    args = parser.parse_args(argv)
    cli_args = args.args[1:] if args.args[:1] == ["--"] else args.args
    from onnxprune.cli.main import main as cli

    main_id, stop, start = threading.get_ident(), threading.Event(), time.perf_counter()
    peak = {"VmRSS": 0, "printed": 0}

    def sample() -> None:
        while not stop.wait(args.every):
            now = _status()
            if now["VmRSS"] > peak["VmRSS"]:
                peak.update(now, stack=_stack(main_id), t=time.perf_counter() - start)
                if now["VmRSS"] >= peak["printed"] + args.step:
                    peak["printed"] = now["VmRSS"]
                    print(f"[{peak['t']:7.1f} s] RSS {now['VmRSS']} MB (anon {now['RssAnon']}, file {now['RssFile']}): "
                          f"{peak['stack']}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cpu = time.process_time()
    code = cli(cli_args)
    stop.set()
    thread.join()
    print(f"exit {code}; {time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu:.1f} CPU s; "
          f"peak RSS {max(peak['VmRSS'], _status()['VmHWM'])} MB (sampled: {peak['VmRSS']} MB, anon "
          f"{peak.get('RssAnon')}, file {peak.get('RssFile')} at {peak.get('t', 0):.1f} s: {peak.get('stack')}); "
          f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
