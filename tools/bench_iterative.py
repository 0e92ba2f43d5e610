#!/usr/bin/env python3
"""One-shot vs iterative pruning (`--steps N`) at the same MACs target and the same total epochs.

For each model: prune to --macs of the dense MACs with the data-aware defaults, then
  one-shot:  prune once, fine-tune --epochs epochs (label-free distillation from the dense model);
  steps N:   prune in N steps toward the target, distilling --epochs / N epochs after each step;
and score both on the task (digits CNN: test accuracy; ppocr_cls: 0/180 accuracy from tools/tasks.py).
Training data is unlabelled: the digits training images, or --train-n rendered lines for ppocr_cls.

    .venv/bin/python tools/bench_iterative.py --models digits,ppocr_cls --epochs 3 --steps 3 [--json out.json]
        [--start fisherrecon50] [--lr 1e-4] [--eval-n 400]

--start names the pruning options (STARTS: criterion, scope, recovery, cap), spelled out because the
defaults may change; each step of the iterative run uses the same ones.

The same as the command line (the digits row):
    onnxprune prune fixtures/digits_cnn.onnx -o p.onnx --target-macs 0.5 --calib fixtures/digits_calib.npz \\
        --train-data fixtures/digits_train.npz --finetune 3 [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxprune.api import prune  # noqa: E402
from onnxprune.iterative import prune_iteratively  # noqa: E402
from onnxprune.load.data import Dataset, load_npz  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.options import FinetuneOptions, PruneOptions, Target  # noqa: E402


# Pruned starts, spelled out (the defaults may change): the CLI flags are in the comments.
STARTS = {
    "default": {},
    # --criterion reconstruction --scope global --recover sequential
    "recon": {"criterion": "reconstruction", "scope": "global", "recover": "sequential"},
    # --criterion fisher --max-layer-ratio 0.5 --scope global --recover sequential
    "fisher50": {"criterion": "fisher", "scope": "global", "recover": "sequential", "max_layer_ratio": 0.5},
    # --criterion fisher_recon --max-layer-ratio 0.5 --scope global --recover sequential
    "fisherrecon50": {"criterion": "fisher_recon", "scope": "global", "recover": "sequential",
                      "max_layer_ratio": 0.5},
}


def digits_case(train_n: int):
    """(dense model, calib, train Dataset, score(model) -> points, input shapes)."""
    fixtures = ROOT / "fixtures"
    test = load_npz(fixtures / "digits_test.npz", {"input": 4})
    train = load_npz(fixtures / "digits_train.npz", {"input": 4}, limit=train_n)

    def score(model) -> float:
        out = session(model).run(None, {"input": test.inputs["input"][:, 0]})[0]
        return 100 * float((out.argmax(1) == test.labels).mean())
    return onnx.load(str(fixtures / "digits_cnn.onnx")), str(fixtures / "digits_calib.npz"), \
        Dataset({"input": train.inputs["input"]}), score, None


def task_case(name: str, train_n: int, eval_n: int | None = None, calib_n: int = 32):
    """eval_n: evaluation samples (default: the task's own count; more makes a point finer than a sample);
    calib_n: calibration samples the pruning reads."""
    import tasks
    task = tasks.get(name)
    ev = task.evaluation(eval_n)
    dense = task.model()
    dense_preds = task.predict(session(dense), ev)
    train = task.calibration(train_n)  # disjoint from the evaluation set; unlabelled
    key = next(iter(train))
    rank = len(dense.graph.input[0].type.tensor_type.shape.dim)
    per_sample = train[key].ndim == rank + 1  # some tasks stack samples as (N, 1, ...) already
    calib = task.calibration(calib_n)
    calib = Dataset({k: v for k, v in calib.items()}) if per_sample else [calib]
    train = Dataset({key: train[key] if per_sample else train[key][:, None]})

    def score(model) -> float:
        return task.score(task.predict(session(model), ev), ev, dense_preds)["score"]
    return dense, calib, train, score, task.input_shapes()


def run(case, macs: float, epochs: int, steps: int, batch: int, start: str = "default",
        lr: float | None = None) -> dict:
    dense, calib, train, score, shapes = case
    options = PruneOptions(target=Target(macs=macs), input_shapes=shapes, bench_rounds=0, **STARTS[start])
    tune = FinetuneOptions(epochs=epochs, batch_size=batch, lr=lr)
    started = time.perf_counter()
    if steps > 1:
        result = prune_iteratively(dense, steps, calib=calib, train_data=train, options=options, finetune=tune)
    else:
        result = prune(dense, calib=calib, train_data=train, options=options, finetune=tune)
    seconds = time.perf_counter() - started
    return {"score": score(result.model), "seconds": round(seconds, 1), "macs_kept": _kept(result.report),
            "load_1min": round(os.getloadavg()[0], 1)}


def _kept(report: dict):
    try:
        return round(report["after"]["macs"] / report["before"]["macs"], 3)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits,ppocr_cls")
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--train-n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--start", default="default", choices=sorted(STARTS), help="the pruning options (STARTS)")
    ap.add_argument("--lr", type=float, help="fixed learning rate (default: the range test)")
    ap.add_argument("--eval-n", type=int, help="evaluation samples of a task model (default: the task's count)")
    ap.add_argument("--only", choices=["one-shot", "steps"], help="run one of the two (the table needs both)")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        case = digits_case(args.train_n) if name == "digits" else task_case(name, args.train_n, args.eval_n)
        dense_score = case[3](case[0])
        row = {"model": name, "dense": dense_score, "start": args.start, "lr": args.lr, "epochs": args.epochs}
        for label, steps in (("one-shot", 1), (f"steps {args.steps}", args.steps)):
            if args.only and not label.startswith(args.only):
                continue
            row[label] = run(case, args.macs, args.epochs, steps, args.batch, args.start, args.lr)
            print(name, label, row[label], flush=True)
        rows.append(row)
    if args.only:
        print(json.dumps(rows))
        if args.json:  # appended: the two halves of a table can run as separate processes
            with open(args.json, "a") as f:
                f.write(json.dumps(rows) + "\n")
        return 0
    print(f"\n| model | dense | one-shot + {args.epochs} epochs | {args.steps} steps, {args.epochs} epochs in all |")
    print("|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k]['score']:.1f} ({r[k]['score'] - r['dense']:+.1f}) · {r[k]['macs_kept']} MACs · {r[k]['seconds']} s"
                 for k in ("one-shot", f"steps {args.steps}")]
        print(f"| {r['model']} | {r['dense']:.1f} | {cells[0]} | {cells[1]} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
