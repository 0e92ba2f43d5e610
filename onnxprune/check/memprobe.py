"""Peak memory of one model in ONNX Runtime, measured in a fresh process.

What it measures: the growth of the process's peak resident set size (Linux VmHWM) from just before
the InferenceSession is created to after `runs` inference runs, i.e. session creation (graph
optimisation, weight copies, arena allocations) plus inference at the given input shapes. Python,
numpy and onnxruntime are already imported and the input arrays already built when the baseline is
read, so they are not counted. The peak is reset first through /proc/self/clear_refs where the
kernel allows it; otherwise the method field says so (the figure is then a lower bound when an
earlier peak was higher). A fresh process keeps one model's allocations from hiding another's.

This file imports only the standard library, numpy and onnxruntime, and is run as a script:

    python -P memprobe.py MODEL.onnx '{"input": [[1, 3, 224, 224], "float32"]}' THREADS RUNS   -> one JSON line
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def probe(model_path: str, inputs: dict[str, tuple[list[int], str]], threads: int = 0, runs: int = 3) -> dict:
    """Peak growth in bytes while creating a session for `model_path` and running it `runs` times on
    random inputs of the given (shape, numpy dtype name)."""
    import numpy as np
    import onnxruntime as ort

    feed = _feed(inputs, np)

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    gc.collect()
    if _status_kb("VmHWM") is None:  # not Linux: the best portable figure is the process peak
        import resource
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, feed)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1 if sys.platform == "darwin" else 1024
        return {"peak_bytes": (peak - base) * scale, "method": "ru_maxrss growth (lower bound)"}
    reset = _reset_peak()
    base = _status_kb("VmRSS")
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, feed)
    peak = _status_kb("VmHWM")
    method = "VmHWM growth over VmRSS (peak reset)" if reset else "VmHWM growth over VmRSS (no peak reset: lower bound)"
    return {"peak_bytes": max(peak - base, 0) * 1024, "method": method}


def _feed(inputs: dict[str, tuple[list[int], str]], np) -> dict:
    rng = np.random.default_rng(0)
    feed = {}
    for name, (shape, dtype_name) in inputs.items():
        dtype = np.dtype(dtype_name)
        if dtype.kind == "f":
            feed[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[name] = rng.integers(0, 2 if dtype.kind == "b" else 8, shape).astype(dtype)
    return feed


def measure_peak_memory(model_path: str, feed: dict, threads: int = 0, runs: int = 3, timeout: float = 600.0) -> dict:
    """Run the probe in a child process on random inputs shaped and typed like `feed`;
    {"peak_bytes", "method"} or {"error": reason}."""
    # -P: do not put this package directory first on sys.path (its inspect.py would shadow the stdlib)
    cmd = [sys.executable, "-P", str(Path(__file__).resolve()), str(model_path),
           json.dumps({k: [list(v.shape), v.dtype.name] for k, v in feed.items()}), str(threads), str(runs)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"memory probe did not finish ({type(exc).__name__})"}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": f"memory probe failed: {lines[-1] if lines else proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    path, shape_json, n_threads, n_runs = sys.argv[1:5]
    print(json.dumps(probe(path, json.loads(shape_json), int(n_threads), int(n_runs))))
