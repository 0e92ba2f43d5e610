#!/usr/bin/env python3
"""Score saved models on a task, every figure the task's score gives (no pruning, no training).

    .venv/bin/python tools/score_models.py nudenet_320n_wide A.onnx B.onnx ... [--eval-n N] [--json OUT.jsonl]

For re-scoring models written by `bench_finetune_goal.py --save DIR` on a wider test set than the one they
were chosen on (nudenet_320n_wide: 96 images, 117 dense faces, its first 16 the narrow task's, also given
as `score first 16`). The dense model is run once; each model's figures are printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import benchlib  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--eval-n", type=int, help="test samples (default: the task's own count)")
    ap.add_argument("--json", help="append one line per model here")
    a = ap.parse_args(argv)
    missing = [m for m in a.models if not Path(m).is_file()]
    if missing:
        print(f"error: no such model file: {missing[0]}", file=sys.stderr)
        return 2
    import tasks
    task = tasks.get(a.task)
    ev = task.evaluation(a.eval_n)
    dense_preds = task.predict(session(task.model()), ev)
    for path in a.models:
        figures = task.score(task.predict(session(onnx.load(path)), ev), ev, dense_preds)
        line = {"task": a.task, "model": path, "load_1min": round(os.getloadavg()[0], 1),
                **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in figures.items()}}
        print(json.dumps(line), flush=True)
        benchlib.append_line(a.json, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
