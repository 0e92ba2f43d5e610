#!/usr/bin/env python3
"""Label-free fine-tuning on a real model, measured on its task: the task metric before and after
`--finetune`, with the wall time and peak RSS of each `python -m onnxprune prune` run.

    .venv/bin/python tools/bench_finetune_task.py --model ppocr_rec --macs 0.5 --epochs 2 --train 256

Data come from tools/tasks.py (rendered, offline): a calibration set, a disjoint training set (no
labels are used) and the task's evaluation set. Two CLI runs share the calibration set and every
option except `--finetune EPOCHS --train-data TRAIN.npz`; each is a subprocess whose own peak RSS
is read from wait4. Prints one Markdown table and, with --json, writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

import numpy as np  # noqa: E402

import tasks  # noqa: E402


def run_measured(args: list[str]) -> dict:
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: exec the CLI so wait4 reports its own peak RSS
        os.execv(sys.executable, [sys.executable, "-m", "onnxprune", *args])
    _, status, usage = os.wait4(pid, 0)
    return {"wall_s": round(time.perf_counter() - start, 1), "rc": os.waitstatus_to_exitcode(status),
            "peak_rss_gb": round(usage.ru_maxrss / 1024 ** 2, 2)}


def score(task, model_path: str, ev, dense_preds) -> dict:
    sess = tasks.session(model_path)
    return task.score(task.predict(sess, ev), ev, dense_preds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ppocr_rec")
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train", type=int, default=256, help="unlabelled training samples")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--extra", default="", help="more CLI options for both runs, space separated")
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args(argv)
    task = tasks.get(a.model)
    work = Path(tempfile.mkdtemp(prefix="ft_task_"))
    dense = work / "dense.onnx"
    import onnx
    onnx.save(task.model(), str(dense))
    calib = task.calibration(a.calib)
    np.savez(work / "calib.npz", **calib)
    train = task.calibration(a.train)  # rendered like the calibration set, disjoint from evaluation; no labels
    np.savez(work / "train.npz", **train)
    shapes = [f"--input-shape={k}:{'x'.join(map(str, v))}" for k, v in (task.input_shapes() or {}).items()]
    common = [str(dense), "--target-macs", str(a.macs), "--calib", str(work / "calib.npz"), "--bench-rounds", "0",
              "-q", *shapes, *a.extra.split()]
    ev = task.evaluation()
    dense_preds = task.predict(tasks.session(str(dense)), ev)
    rows = {"dense": {**task.score(dense_preds, ev, dense_preds)}}
    for label, extra in (("pruned", []), (f"pruned + finetune {a.epochs}",
                                          ["--finetune", str(a.epochs), "--train-data", str(work / "train.npz")])):
        out = work / f"{label.replace(' ', '_')}.onnx"
        run = run_measured(["prune", str(dense), "-o", str(out), *common[1:], *extra])
        rows[label] = {**run, **(score(task, str(out), ev, dense_preds) if run["rc"] == 0 else {})}
    cmd = " ".join(["python -m onnxprune prune", "MODEL", "-o", "OUT", *common[1:]])
    print(f"{a.model} at {a.macs} of the MACs, {a.train} unlabelled training samples; both runs: {cmd}")
    print(f"| run | {task.metric} | wall s | peak RSS GB |\n|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r.get('score', float('nan')):.1f} | {r.get('wall_s', '')} | {r.get('peak_rss_gb', '')} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
