#!/usr/bin/env python3
"""Where a pruned classifier disagrees with its dense teacher, per data set: is there distillation signal
on the training inputs, or only on the test set?

    .venv/bin/python tools/diag_distill_signal.py PRUNED.onnx [TRAINED.onnx ...] [--json out.json]

For the digits CNN (fixtures/digits_cnn.onnx as teacher) and each model given, per set (the 1024
training inputs bench_finetune_goal.py trains on, the rest of fixtures/digits_train.npz, the calibration
fixture, the test fixture): accuracy against the labels, top-1 agreement with the dense model, the
distillation loss the fine-tuning minimises (KL of the dense model's softmax at temperature 2 against the
model's, times 4 as the loss scales it, mean per sample), that KL split over agreeing and disagreeing samples, and the share of samples
whose dense margin (top-1 minus top-2 logit) is below 2, where a small logit change flips the answer.
No labels reach training; they are read here only to score.

    --train-on-test OUT.onnx [--lr R] [--epochs E]: a diagnostic, never a result: fine-tune the first model
    label-free on the test set's own inputs (the default distillation; `auto` rate unless --lr) and
    write it to OUT, then report it too: whether distillation can move the test errors once their
    inputs are in the training data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune.load.runtime import session  # noqa: E402

TEMPERATURE = 2.0  # TrainSettings.temperature's default
TRAIN_N = 1024     # bench_finetune_goal.py --train


def digits_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (inputs N x 1 x 8 x 8, labels)."""
    f = ROOT / "fixtures"
    train, calib, test = (np.load(f / f"digits_{s}.npz") for s in ("train", "calib", "test"))
    return {f"train[:{TRAIN_N}] (trained on)": (train["input"][:TRAIN_N], train["labels"][:TRAIN_N]),
            f"train[{TRAIN_N}:] (unused)": (train["input"][TRAIN_N:], train["labels"][TRAIN_N:]),
            "calib": (calib["input"], calib["labels"]), "test": (test["input"], test["labels"])}


def logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = session(model)
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def kl_per_sample(teacher: np.ndarray, student: np.ndarray, t: float = TEMPERATURE) -> np.ndarray:
    """KL(softmax(teacher / t) || softmax(student / t)) per row, times t^2 as the training loss scales it."""
    def log_softmax(z):
        z = z / t - (z / t).max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))
    lt, ls = log_softmax(teacher.astype(np.float64)), log_softmax(student.astype(np.float64))
    return t * t * (np.exp(lt) * (lt - ls)).sum(1)


def compare(dense: np.ndarray, student: np.ndarray, labels: np.ndarray) -> dict:
    """The figures of one model on one set, given both models' logits."""
    agree = dense.argmax(1) == student.argmax(1)
    kl = kl_per_sample(dense, student)
    top2 = np.sort(dense, 1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    return {"n": int(len(labels)), "accuracy": round(100 * float((student.argmax(1) == labels).mean()), 2),
            "dense_accuracy": round(100 * float((dense.argmax(1) == labels).mean()), 2),
            "agreement": round(100 * float(agree.mean()), 2), "disagreeing": int((~agree).sum()),
            "kl": round(float(kl.mean()), 5),
            "kl_agreeing": round(float(kl[agree].mean()), 5) if agree.any() else None,
            "kl_disagreeing": round(float(kl[~agree].mean()), 5) if (~agree).any() else None,
            "dense_margin_below_2": round(100 * float((margin < 2).mean()), 2),
            "dense_margin_median": round(float(np.median(margin)), 2),
            "dense_margin_disagreeing": [round(float(m), 2) for m in np.sort(margin[~agree])]}


def train_on_test(path: str, out: str, lr: float | None, epochs: int) -> None:
    """The model at `path` distilled from the dense model on the test inputs (labels unused), saved to `out`."""
    from onnxprune.load.data import Dataset
    from onnxprune.recover.finetune import finetune

    x = np.load(ROOT / "fixtures" / "digits_test.npz")["input"]
    res = finetune(onnx.load(path), Dataset({"input": x[:, None]}), epochs, teacher=onnx.load(str(ROOT / "fixtures" / "digits_cnn.onnx")),
                   progress=False, lr=lr)
    print(f"trained on the {len(x)} test inputs: lr {res.lr}, kept epoch {res.best_epoch}")
    onnx.save(res.model, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="pruned (and trained) copies of fixtures/digits_cnn.onnx")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--train-on-test", metavar="OUT.onnx", help="diagnostic: distil the first model on the test inputs")
    ap.add_argument("--lr", type=float, help="with --train-on-test (default: the range test)")
    ap.add_argument("--epochs", type=int, default=5, help="with --train-on-test")
    a = ap.parse_args(argv)
    for path in a.models:
        if not Path(path).is_file():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
    if a.train_on_test:
        train_on_test(a.models[0], a.train_on_test, a.lr, a.epochs)
        a.models.append(a.train_on_test)
    dense = onnx.load(str(ROOT / "fixtures" / "digits_cnn.onnx"))
    sets = digits_sets()
    out = {}
    for path in a.models:
        model = onnx.load(path)
        out[path] = {name: compare(logits(dense, x), logits(model, x), y) for name, (x, y) in sets.items()}
        print(path)
        for name, r in out[path].items():
            print(f"  {name:26s} acc {r['accuracy']:6.2f} (dense {r['dense_accuracy']:6.2f})  agreement "
                  f"{r['agreement']:6.2f} ({r['disagreeing']} differ)  KL {r['kl']:.5f} (agreeing {r['kl_agreeing']}, "
                  f"disagreeing {r['kl_disagreeing']})  dense margin<2: {r['dense_margin_below_2']}% "
                  f"(median {r['dense_margin_median']}; where they differ: {r['dense_margin_disagreeing']})")
    if a.json:
        tmp = Path(a.json).with_suffix(".part")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
