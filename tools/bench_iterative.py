#!/usr/bin/env python3
"""One-shot vs iterative pruning (`--steps N`) at the same MACs target and the same total epochs.

Each side is the command line itself, run in a subprocess under a memory cap, so the table measures what a
user gets (the calibration guard on the kept epoch, the learning-rate range test, the batch, the epoch split):

    onnxprune prune dense.onnx -o p.onnx --target-macs 0.5 --calib calib.npz --train-data train.npz \\
        --finetune 5 [--steps 3] --bench-rounds 0 --report r.json

calib.npz holds --calib-n calibration samples and train.npz --train-n unlabelled inputs (no 'labels' array),
written once per model to a work folder: the digits CNN from fixtures/ (digits_calib.npz as given, the first
--train-n of digits_train.npz), a task model (tools/tasks.py) from its own calibration draw, disjoint from its
evaluation set. Both outputs are scored on the task (digits: test accuracy; a task: its metric).

    .venv/bin/python tools/bench_iterative.py --models digits,ppocr_cls,captcha_crnn --epochs 5 --steps 3 \\
        [--json out.json] [--start default] [--lr 1e-4] [--eval-n 400] [--mem-gb 6] [--keep-work DIR]

--start names the pruning options (STARTS, as CLI flags); `default` is the CLI's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxprune.load.data import load_npz  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
import task_npz  # noqa: E402

# Pruned starts as CLI flags (the defaults may change: the old starts stay reproducible).
STARTS = {
    "default": [],
    "recon": ["--criterion", "reconstruction", "--scope", "global", "--recover", "sequential"],
    "fisher50": ["--criterion", "fisher", "--max-layer-ratio", "0.5", "--scope", "global", "--recover", "sequential"],
    "fisherrecon50": ["--criterion", "fisher_recon", "--max-layer-ratio", "0.5", "--scope", "global",
                      "--recover", "sequential"],
}


def digits_case(work: Path, train_n: int, calib_n: int | None = None):
    """(dense path, calib path, train path, input-shape flags, score(model) -> points)."""
    fixtures = ROOT / "fixtures"
    test = load_npz(fixtures / "digits_test.npz", {"input": 4})
    train = np.load(fixtures / "digits_train.npz")["input"][:train_n]
    np.savez(work / "train.npz", input=train)  # unlabelled: no 'labels' array
    calib = str(fixtures / "digits_calib.npz")
    if calib_n is not None:
        np.savez(work / "calib.npz", **{k: v[:calib_n] for k, v in np.load(calib).items()})
        calib = str(work / "calib.npz")

    def score(model) -> float:
        out = session(model).run(None, {"input": test.inputs["input"][:, 0]})[0]
        return 100 * float((out.argmax(1) == test.labels).mean())
    return str(fixtures / "digits_cnn.onnx"), calib, str(work / "train.npz"), [], score


def task_case(name: str, work: Path, train_n: int, eval_n: int | None = None, calib_n: int | None = None):
    """The task's model (as it scores it) and data written where the CLI reads them."""
    import tasks
    task = tasks.get(name)
    ev = task.evaluation(eval_n)
    task_npz.write(name, work, train_n, calib_n or 32)  # training inputs disjoint from the evaluation set; unlabelled
    dense_preds = task.predict(session(onnx.load(str(work / "dense.onnx"))), ev)
    flags = []
    for k, dims in (task.input_shapes() or {}).items():
        flags += ["--input-shape", f"{k}:{'x'.join(str(d) for d in dims)}"]

    def score(model) -> float:
        return task.score(task.predict(session(model), ev), ev, dense_preds)["score"]
    return str(work / "dense.onnx"), str(work / "calib.npz"), str(work / "train.npz"), flags, score


def command(case, out: Path, macs: float, epochs: int, steps: int, batch: int, start: str, lr: float | None,
            seed: int) -> list[str]:
    dense, calib, train, shape_flags, _ = case
    cmd = [sys.executable, "-m", "onnxprune", "prune", dense, "-o", str(out), "--target-macs", str(macs),
           "--calib", calib, "--train-data", train, "--finetune", str(epochs), "--batch-size", str(batch),
           "--bench-rounds", "0", "--seed", str(seed), "--report", str(out.with_suffix(".json")), "--force",
           *shape_flags, *STARTS[start]]
    if steps > 1:
        cmd += ["--steps", str(steps)]
    if lr is not None:
        cmd += ["--lr", str(lr)]
    return cmd


def run(case, out: Path, mem_gb: float, timeout: float, **how) -> dict:
    """One CLI run: the task score, MACs kept, wall seconds, load before/after, the kept epochs."""
    cmd = command(case, out, **how)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    cap = int(mem_gb * 2**30)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['no output'])[-1][:200]}",
                "seconds": round(seconds, 1)}
    report = json.loads(out.with_suffix(".json").read_text())
    row = {"score": case[4](onnx.load(str(out))), "seconds": round(seconds, 1), "macs_kept": _kept(report),
           "load_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
           "command": " ".join(cmd[1:])}
    if "finetune" in report:
        row["finetune"] = _epochs(report["finetune"])
    if "iterative" in report:
        row["trail"] = [{"step": s["step"], "target": s["target"], "kept": s["kept"], **_epochs(s["finetune"])}
                        for s in report["iterative"]["trail"]]
    return row


def _epochs(fragment: dict | None) -> dict:
    """A fine-tuning fragment in short: the rate, the kept epoch, held-out and guard losses per epoch."""
    if not fragment:
        return {}
    hist = fragment.get("history", [])
    return {"lr": fragment.get("lr"), "epochs": fragment.get("epochs"), "kept_epoch": fragment.get("best_epoch"),
            "val_loss": [h.get("val_loss") for h in hist], "guard_loss": [h.get("guard_loss") for h in hist],
            "guard_agreement": [h.get("guard_agreement") for h in hist]}


def _kept(report: dict):
    try:
        return round(report["after"]["macs"] / report["before"]["macs"], 3)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def _cell(r: dict, dense: float) -> str:
    if "error" in r:
        return r["error"]
    return f"{r['score']:.1f} ({r['score'] - dense:+.1f}) · {r['macs_kept']} MACs · {r['seconds']} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits,ppocr_cls")
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--train-n", type=int, default=1024)
    ap.add_argument("--calib-n", type=int, help="calibration samples (default: digits_calib.npz's 256; a task's 32)")
    ap.add_argument("--batch", type=int, default=64, help="--batch-size (default: the CLI's, 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", default="default", choices=sorted(STARTS), help="the pruning options (STARTS)")
    ap.add_argument("--lr", type=float, help="fixed learning rate (default: the range test)")
    ap.add_argument("--eval-n", type=int, help="evaluation samples of a task model (default: the task's count)")
    ap.add_argument("--only", choices=["one-shot", "steps"], help="run one of the two (the table needs both)")
    ap.add_argument("--untrained", action="store_true", help="also score the one-shot pruned model before training")
    ap.add_argument("--mem-gb", type=float, default=6.0, help="address-space cap of each CLI run")
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds per CLI run")
    ap.add_argument("--keep-work", help="write the data and outputs here (default: a temporary folder)")
    ap.add_argument("--json", help="append each model's row (one JSON line) to this file")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        work = Path(args.keep_work or tempfile.mkdtemp(prefix="bench_iter_")) / name
        work.mkdir(parents=True, exist_ok=True)
        case = digits_case(work, args.train_n, args.calib_n) if name == "digits" else \
            task_case(name, work, args.train_n, args.eval_n, args.calib_n)
        dense_score = case[4](onnx.load(case[0]))
        row = {"model": name, "dense": dense_score, "start": args.start, "lr": args.lr, "epochs": args.epochs,
               "train_n": args.train_n, "batch": args.batch, "seed": args.seed}
        sides = [("untrained", 1, 0)] if args.untrained else []
        sides += [("one-shot", 1, args.epochs), (f"steps {args.steps}", args.steps, args.epochs)]
        for label, steps, epochs in sides:
            if args.only and not label.startswith(args.only):
                continue
            row[label] = run(case, work / f"{label.replace(' ', '')}.onnx", args.mem_gb, args.timeout,
                             macs=args.macs, epochs=epochs, steps=steps, batch=args.batch, start=args.start,
                             lr=args.lr, seed=args.seed)
            print(name, label, json.dumps(row[label]), flush=True)
        rows.append(row)
        if args.json:  # appended per model: a long table survives an interrupted run
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(f"\n| model | dense | pruned, untrained | one-shot + {args.epochs} epochs | "
          f"{args.steps} steps, {args.epochs} epochs in all |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = [_cell(r[k], r["dense"]) if k in r else "not run"
                 for k in ("untrained", "one-shot", f"steps {args.steps}")]
        print(f"| {r['model']} | {r['dense']:.1f} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
