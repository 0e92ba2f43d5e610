"""What the benchmark scripts in tools/ share."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def append_line(path: str | None, row) -> None:
    """`row` as one JSON line at the end of `path` (nothing when None): a killed run keeps the rows done."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def revision() -> str:
    """The checkout's commit, with '+dirty' when the library has uncommitted changes, so every table
    says which code produced it."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "onnxprune"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_queue(jobs, run, json_path: str | None, mem_gb: float) -> list[dict]:
    """Run `run(*job)` for each job under an address-space cap of `mem_gb`, one result dict per job (a
    failure is a row with its error, not the end of the queue), each printed and appended to the JSON
    list at `json_path` (rewritten after every row, so a killed queue keeps what it measured)."""
    import json
    import resource

    cap = int(mem_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    path = Path(json_path) if json_path else None
    out = json.loads(path.read_text()) if path and path.is_file() else []
    for job in jobs:
        try:
            res = run(*job)
        except Exception as exc:  # noqa: BLE001  (one model's failure is a row)
            res = {"job": [str(j) for j in job], "error": f"{type(exc).__name__}: {exc}"[:200]}
        out.append(res)
        print(json.dumps(res), flush=True)
        if path:
            path.write_text(json.dumps(out, indent=1))
    return out


def task_files(task, name: str, work: Path, calib_n: int) -> tuple[Path, Path]:
    """The task's dense model and its first `calib_n` calibration samples as files in `work` (written
    once, reused by later jobs of the same queue): (model.onnx, calib.npz)."""
    import numpy as np
    import onnx

    model_path, calib_path = work / f"{name}.onnx", work / f"{name}_calib{calib_n}.npz"
    if not model_path.is_file():
        onnx.save(task.model(), model_path)
    if not calib_path.is_file():
        np.savez(calib_path, **task.calibration(calib_n))
    return model_path, calib_path
