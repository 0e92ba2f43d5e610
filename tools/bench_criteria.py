#!/usr/bin/env python3
"""Benchmark: importance criterion x scope x recovery x MACs kept on the digits CNN, no training.

The digits CNN (fixtures/digits_cnn.onnx, trained on scikit-learn's digits, exported from PyTorch with
BatchNorm folded) is pruned by onnxprune to a fraction of its MACs with every registered criterion,
local and global scope, and each recovery method; each pruned model is scored on the 397 held-out
digits in fixtures/digits_test.npz. Nothing is trained or fine-tuned. Calibration is the 256 training
digits of fixtures/digits_calib.npz with their labels removed, so every configuration is label-free.

    python tools/bench_criteria.py                       # full grid, round_to 1, Markdown to stdout
    python tools/bench_criteria.py --round-to 8          # the library default width rounding
    python tools/bench_criteria.py --criteria l2,activation --levels 0.5

Prints Markdown tables (accuracy %, best cell per MACs level in bold) and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import onnxprune  # noqa: E402
from benchlib import revision  # noqa: E402

CRITERIA = ("l1", "l2", "fpgm", "lamp", "bn_scale", "random", "activation", "apoz", "reconstruction", "sensitivity")
RECOVERY = ("none", "bias", "lstsq")
SCOPES = ("local", "global")
LEVELS = (0.8, 0.7, 0.5, 0.3)




def label_free_copy(calib: Path, folder: Path) -> Path:
    """The calibration file without its 'labels' array (selection and recovery never see labels)."""
    with np.load(calib) as z:
        arrays = {k: z[k] for k in z.files if k != "labels"}
    out = folder / "calib_nolabels.npz"
    np.savez(out, **arrays)
    return out


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString() if hasattr(model, "SerializeToString") else str(model),
                             opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return float((s.run(None, {name: x})[0].argmax(1) == y).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "fixtures/digits_cnn.onnx"))
    ap.add_argument("--calib", default=str(ROOT / "fixtures/digits_calib.npz"))
    ap.add_argument("--test", default=str(ROOT / "fixtures/digits_test.npz"))
    ap.add_argument("--criteria", default=",".join(CRITERIA))
    ap.add_argument("--recover", default=",".join(RECOVERY))
    ap.add_argument("--scopes", default=",".join(SCOPES))
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)), help="MACs fractions kept")
    ap.add_argument("--round-to", type=int, default=1)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    criteria = args.criteria.split(",")
    recovery = args.recover.split(",")
    scopes = args.scopes.split(",")
    levels = [float(v) for v in args.levels.split(",")]
    with np.load(args.test) as z:
        x_test, y_test = z["input"], z["labels"]
    dense_acc = accuracy(args.model, x_test, y_test)

    results = {}  # (criterion, scope, recover, level) -> (acc, achieved macs fraction, seconds) or error text
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        calib = label_free_copy(Path(args.calib), Path(tmp))
        for crit in criteria:
            for scope in scopes:
                for rec in recovery:
                    for level in levels:
                        t0 = time.time()
                        try:
                            r = onnxprune.prune(args.model, calib=str(calib), criterion=crit, scope=scope,
                                                recover=rec, target_macs=level, round_to=args.round_to,
                                                bench_rounds=0, seed=0)
                        except Exception as exc:  # a failing configuration is a result, not a crash
                            results[crit, scope, rec, level] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                            continue
                        macs = r.report["after"]["macs"] / r.report["before"]["macs"]
                        results[crit, scope, rec, level] = (accuracy(r.model, x_test, y_test), macs, time.time() - t0)
    elapsed = time.time() - started

    ok = {k: v for k, v in results.items() if isinstance(v, tuple)}
    best = {}
    for level in levels:
        cands = [(v[0], k) for k, v in ok.items() if k[3] == level]
        if cands:
            best[level] = max(cands)[0]

    print(f"## Criterion x scope x recovery on the digits CNN (no training), round_to={args.round_to}\n")
    print(f"onnxprune {revision()}; dense accuracy {100 * dense_acc:.2f}% on {len(y_test)} test digits; "
          f"calibration: {args.calib} without labels; {len(results)} pruned models in {elapsed:.0f} s.\n")
    print("Accuracy (%) at each fraction of MACs kept; **bold** = best at that level; "
          "`*` = achieved MACs more than 0.02 away from the target.\n")
    head = "| criterion | scope | recover | " + " | ".join(f"MACs {lv:g}" for lv in levels) + " |"
    print(head)
    print("|" + "---|" * 3 + "---:|" * len(levels))
    for crit in criteria:
        for scope in scopes:
            for rec in recovery:
                cells = []
                for level in levels:
                    v = results.get((crit, scope, rec, level))
                    if v is None:
                        cells.append("")
                    elif isinstance(v, str):
                        cells.append("error")
                    else:
                        text = f"{100 * v[0]:.2f}" + ("*" if abs(v[1] - level) > 0.02 else "")
                        cells.append(f"**{text}**" if abs(v[0] - best[level]) < 1e-12 else text)
                print(f"| {crit} | {scope} | {rec} | " + " | ".join(cells) + " |")

    print("\n### Best configuration per MACs level\n")
    print("| MACs target | achieved | best configuration (criterion / scope / recover) | accuracy % | "
          "drop vs dense (points) | plain L2, local, no recovery % | L2 local lstsq % |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for level in levels:
        if level not in best:
            continue
        winners = [k for k, v in ok.items() if k[3] == level and abs(v[0] - best[level]) < 1e-12]
        achieved = ", ".join(sorted({f"{ok[k][1]:.3f}" for k in winners}))
        grouped = {}
        for c, s, r, _ in winners:
            grouped.setdefault((c, s), []).append(r)
        names = "; ".join(f"{c} / {s} / {rs[0] if len(rs) == 1 else '{' + ', '.join(rs) + '}'}"
                          for (c, s), rs in grouped.items())
        plain = ok.get(("l2", "local", "none", level))
        l2lsq = ok.get(("l2", "local", "lstsq", level))
        print(f"| {level:g} | {achieved} | {names} | {100 * best[level]:.2f} | {100 * (dense_acc - best[level]):.2f} | "
              + (f"{100 * plain[0]:.2f}" if plain else "n/a") + " | "
              + (f"{100 * l2lsq[0]:.2f}" if l2lsq else "n/a") + " |")

    if ok:
        gaps = [abs(v[1] - k[3]) for k, v in ok.items()]
        print(f"\nAchieved MACs fraction (onnxprune.check.bench.count_macs on the ONNX graphs): worst gap to target "
              f"{max(gaps):.3f}, median {float(np.median(gaps)):.3f}; "
              f"{sum(g > 0.02 for g in gaps)} of {len(gaps)} models more than 0.02 away.")
    errors = {k: v for k, v in results.items() if isinstance(v, str)}
    if errors:
        print("\nFailed configurations:\n")
        for (c, s, r, lv), msg in errors.items():
            print(f"- {c} / {s} / {r} @ {lv:g}: {msg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
