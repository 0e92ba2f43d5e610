"""The command-line paths tools/smoke_default_survey.py --path runs on survey exports: each as a user
would type it (tools/prune_onnx.py MODEL -o OUT ...), in its own subprocess under `timeout`, with .npz
files of random samples at the model's input shapes. A row per (model, path): exit code, the one-line
outcome, wall time, and what the written report says (MACs kept, channels removed, fidelity, validity).
The bad-input paths check the promise of onnxprune/cli/exits.py: exit 2, one line, the input untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

import survey_exports
from onnxprune.load.data import index_limits

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("SMOKE_WORK", "/tmp/onnxprune_smoke"))
SCALARS = {"sr": 16000}  # rank-0 integer inputs a user feeds a fixed value (a VAD's sample rate)
# path -> the CLI arguments after MODEL -o OUT (CALIB / TRAIN stand for the written .npz files)
RUNS = {
    "macs08": ["--target-macs", "0.8", "--calib", "CALIB"],
    "macs05": ["--target-macs", "0.5", "--calib", "CALIB"],
    "finetune": ["--target-macs", "0.5", "--calib", "CALIB", "--train-data", "TRAIN", "--finetune", "1"],
    "latency": ["--target-latency", "0.6", "--calib", "CALIB"],
    "datafree": ["--ratio", "0.3"],
    # paths added after wave 14: pruning in steps with distillation between them; the hidden width forced
    "steps": ["--target-macs", "0.5", "--calib", "CALIB", "--train-data", "TRAIN", "--finetune", "2", "--steps", "2"],
    "hidden_on": ["--target-macs", "0.5", "--calib", "CALIB", "--hidden", "on"],
}
BAD = ("bad_shape", "same_output", "same_output_force", "truncated")
PATHS = (*RUNS, *BAD)


def random_npz(model: onnx.ModelProto, shapes: dict, n: int, path: Path, seed: int = 0) -> dict:
    """Write `n` random samples stacked per input (N, *shape) to `path`; return the per-sample shapes."""
    rng = np.random.default_rng(seed)
    limits = index_limits(model)
    inits = {i.name for i in model.graph.initializer}
    arrays, used = {}, {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        shape = tuple(shapes.get(inp.name) or [d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim])
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        full = (n, *shape)
        if not shape and inp.name in SCALARS:
            arr = np.full(full, SCALARS[inp.name], dtype)
        elif np.issubdtype(dtype, np.floating):
            arr = rng.standard_normal(full).astype(dtype)
        elif dtype == np.bool_ or "mask" in inp.name:
            arr = np.ones(full, dtype)
        else:
            arr = rng.integers(0, max(1, min(8, limits.get(inp.name, 8))), full).astype(dtype)
        arrays[inp.name], used[inp.name] = arr, shape
    np.savez(path, **arrays)
    return used


def _shape_args(shapes: dict) -> list[str]:
    out = []
    for name, shape in shapes.items():
        out += ["--input-shape", f"{name}:{'x'.join(str(d) for d in shape)}"] if shape else []
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(args: list[str], timeout: int, log: Path) -> tuple[int, str, float]:
    """Run the CLI; (exit code, its stderr, wall seconds). A timeout is exit 124 as with timeout(1)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    cmd = ["nice", "-n", "5", "timeout", str(timeout), sys.executable, str(ROOT / "tools" / "prune_onnx.py"), *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    log.write_text(" ".join(cmd) + "\n" + proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc.returncode, proc.stderr, wall


def _outcome(stderr: str, rc: int) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("onnxprune: ")]
    if rc == 124:
        last = next((ln for ln in reversed(lines) if "onnxprune" in ln or "INFO" in ln), lines[-1] if lines else "")
        return f"timed out; last log line: {last[:200]}"
    return (errors[-1] if errors else lines[-1] if lines else "")[:300]


def _report_fields(path: Path) -> dict:
    if not path.exists():
        return {}
    rep = json.loads(path.read_text())
    before, after, fid = rep.get("before", {}), rep.get("after", {}), rep.get("fidelity", {})
    plan = rep.get("plan") or {}
    cos = fid.get("cosine")
    return {"macs_ratio": round(after.get("macs", 0) / max(before.get("macs", 1), 1), 3),
            "removed": plan.get("removed", 0), "channels": plan.get("channels"),
            "cosine": None if cos is None or (isinstance(cos, float) and math.isnan(cos)) else round(cos, 4),
            "cosine_nan": isinstance(cos, float) and math.isnan(cos),
            "latency_ratio": rep.get("latency_ratio"),
            "valid": all(v in ("passed", "unchanged") for v in rep.get("validation", {}).values()
                         if isinstance(v, str)),
            "criterion": rep.get("options", {}).get("criterion"),
            "finetune_best_epoch": (rep.get("finetune") or {}).get("best_epoch")}


def _warnings(stderr: str) -> list[str]:
    keep = [ln.strip()[:200] for ln in stderr.splitlines()
            if "WARNING" in ln or "warning:" in ln.lower() or "Traceback" in ln or "nan" in ln.split()]
    return list(dict.fromkeys(keep))[:8]


def run_path(key: str, path: str, timeout: int, samples: int) -> dict:
    entry = survey_exports.BY_KEY[key]
    src = survey_exports.model_path(entry)
    work = WORK / key
    work.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src), load_external_data=False)
    calib, train = work / "calib.npz", work / "train.npz"
    shapes = random_npz(model, dict(entry.input_shapes or {}), samples, calib)
    if "TRAIN" in RUNS.get(path, ()) and not train.exists():
        random_npz(model, shapes, 64, train, seed=1)
    out, report, log = work / f"{path}.onnx", work / f"{path}.json", work / f"{path}.log"
    checkpoints = work.glob(out.name + ".finetune-checkpoint*")  # a failed run's: a rerun is not a --resume
    for stale in (out, report, out.with_name(out.name + ".data"), *checkpoints):  # not an overwrite the CLI refuses
        stale.unlink(missing_ok=True)
    row = {"model": key, "path": path}
    if path in RUNS:
        args = [str(src), "-o", str(out), "--report", str(report), "-v", *_shape_args(shapes)]
        args += [{"CALIB": str(calib), "TRAIN": str(train)}.get(a, a) for a in RUNS[path]]
        rc, err, wall = _cli(args, timeout, log)
        row.update(rc=rc, outcome=_outcome(err, rc), wall_s=round(wall, 1), **_report_fields(report))
        row["warnings"] = _warnings(err)
        row["traceback"] = "Traceback" in err
        return row
    return row | _bad_input(path, src, shapes, work, timeout, log)


def _bad_input(path: str, src: Path, shapes: dict, work: Path, timeout: int, log: Path) -> dict:
    """exit 2, one stderr line, the input file unchanged (its own copy, never the cached export)."""
    copy = work / "input_copy.onnx"
    for f in src.parent.iterdir():  # external data travels with the model
        if f.name.startswith(src.stem) and f.suffix != ".onnx":
            shutil.copy(f, work / f.name)
    shutil.copy(src, copy)
    out = work / f"{path}.onnx"
    if path == "bad_shape":
        name, shape = next((k, v) for k, v in shapes.items() if v)
        wrong = tuple(shape[:-1]) + (shape[-1] + 3,)
        bad = work / "bad_shape.npz"
        with np.load(work / "calib.npz") as z:
            arrays = dict(z)
        arrays[name] = np.zeros((len(arrays[name]), *wrong), arrays[name].dtype)
        np.savez(bad, **arrays)
        args = [str(copy), "-o", str(out), "--target-macs", "0.8", "--calib", str(bad), *_shape_args(shapes)]
        # the data's shape and what the model takes (declared, or the axis that differs)
        expect = [name, "x".join(map(str, wrong)), f"{shape[-1]}"]
    elif path.startswith("same_output"):
        args = [str(copy), "-o", str(copy), "--ratio", "0.3", *_shape_args(shapes)]
        args += ["--force"] if path.endswith("force") else []
        expect = []
    else:  # truncated
        data = copy.read_bytes()
        copy.write_bytes(data[: len(data) // 2])
        args = [str(copy), "-o", str(out), "--ratio", "0.3"]
        expect = []
    before = _digest(copy)
    rc, err, wall = _cli(args, timeout, log)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    named = all(e in err for e in expect)
    ok = (rc == 2 and len(lines) == 1 and named and _digest(copy) == before
          and (path.startswith("same_output") or not out.exists()))
    return {"rc": rc, "outcome": (lines[-1] if lines else "")[:300], "wall_s": round(wall, 1), "lines": len(lines),
            "input_unchanged": _digest(copy) == before, "as_promised": bool(ok)}


def main(keys: list[str], paths: str, out: str | None, timeout: int, samples: int) -> int:
    chosen = list(PATHS) if paths == "all" else paths.split(",")
    rows = json.loads(Path(out).read_text()) if out and Path(out).exists() else []
    for key in keys:
        for path in chosen:
            try:
                row = run_path(key, path, timeout, samples)
            except Exception as exc:  # noqa: BLE001  (a smoke run reports every failure and goes on)
                row = {"model": key, "path": path, "rc": None, "outcome": f"smoke tool: {type(exc).__name__}: {exc}"[:300]}
            rows = [r for r in rows if (r["model"], r["path"]) != (key, path)] + [row]
            print(json.dumps({k: v for k, v in row.items() if k != "warnings"}), flush=True)
            if out:
                Path(out).write_text(json.dumps(rows, indent=1))
    return 0


def _cell(row: dict | None) -> str:
    """One table cell: exit code, then what the report says (MACs kept, cosine, latency ratio) or the
    promise kept (bad input), then wall seconds."""
    if row is None:
        return "-"
    rc = row.get("rc")
    if row["path"] in BAD:
        return f"{rc} {'ok' if row.get('as_promised') else 'BROKEN'}"
    if rc != 0:
        return f"**{rc}** ({row.get('wall_s', '?')} s)"
    bits = [f"{row['macs_ratio']:.2f}"]
    if row.get("cosine") is not None:
        bits.append(f"cos {row['cosine']:.3f}")
    if row["path"] == "latency" and row.get("latency_ratio") is not None:
        bits.append(f"lat {row['latency_ratio']:.2f}")
    if not row.get("removed"):
        bits.append("0 removed")
    return f"0: {', '.join(bits)} ({row['wall_s']:.0f} s)"


def table(rows: list[dict]) -> str:
    """Markdown: a row per model, a column per path."""
    paths = [p for p in PATHS if any(r["path"] == p for r in rows)]
    by = {(r["model"], r["path"]): r for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = ["| model | " + " | ".join(paths) + " |", "|---|" + "---|" * len(paths)]
    lines += [f"| {m} | " + " | ".join(_cell(by.get((m, p))) for p in paths) + " |" for m in models]
    return "\n".join(lines)
