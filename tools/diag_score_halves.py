#!/usr/bin/env python3
"""How stable a criterion's channel ranking is on a model's own calibration samples: the channels are
scored on the even-position samples and on the odd-position ones, and the two rankings compared
(Spearman correlation over the prunable channels, the mean of it within each group, and the overlap
of the lowest-scored half). A ranking that changes with which 16 samples it saw has too few samples
for the model. Usage:

    OPENBLAS_NUM_THREADS=1 nice -n 5 python tools/diag_score_halves.py --models digits_cnn,ppocr_cls \
        --criteria fisher,reconstruction --json docs/bench_issue9_s12_halves.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from benchlib import run_queue, task_files  # noqa: E402


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties averaged."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for v in np.unique(x[np.r_[False, np.diff(np.sort(x)) == 0]]) if len(x) > 1 else []:
        r[x == v] = r[x == v].mean()
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement(dep, a: np.ndarray, b: np.ndarray) -> dict:
    """Spearman over all prunable channels, its mean within groups, and the overlap of the lower halves."""
    groups = [g.channels[~g.frozen] for g in dep.groups if (~g.frozen).sum() >= 2]
    chans = np.concatenate(groups) if groups else np.zeros(0, int)
    within = [spearman(a[c], b[c]) for c in groups if len(c) >= 3]
    half = len(chans) // 2
    low_a = set(chans[np.argsort(a[chans], kind="stable")[:half]])
    low_b = set(chans[np.argsort(b[chans], kind="stable")[:half]])
    return {"spearman": spearman(a[chans], b[chans]), "within_groups": float(np.nanmean(within)) if within else None,
            "lower_half_overlap": len(low_a & low_b) / max(half, 1), "channels": int(len(chans))}


def one(name: str, criterion: str, seed: int, level: float, calib_n: int, work: Path) -> dict:
    import onnx

    import tasks
    from onnxprune.load.data import Dataset
    from onnxprune.options import options_from_keywords
    from criterion_pick import split
    from onnxprune.stages import as_dataset, channel_scores, prepare

    task = tasks.get(name)
    model_path, calib = task_files(task, name, work, calib_n)
    options, _ = options_from_keywords({"target_macs": level, "input_shapes": task.input_shapes(), "seed": seed,
                                        "criterion": criterion, "bench_rounds": 0})
    data = as_dataset(str(calib), onnx.load(str(model_path)), None, options.input_shapes)
    t0 = time.time()
    scores, dep = [], None
    for part in split(data):
        prep = prepare(str(model_path), options, Dataset(part.inputs, None), None)
        scores.append(np.asarray(channel_scores(prep, prep.options), dtype=np.float64))
        dep = prep.dep
    return {"model": name, "criterion": criterion, "seed": seed, "calib_n": calib_n,
            **agreement(dep, *scores), "seconds": time.time() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--criteria", default="fisher,reconstruction")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--level", type=float, default=0.5)
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--mem-gb", type=float, default=6.0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="halves_") as tmp:
        jobs = [(name, criterion, seed) for name in args.models.split(",") for criterion in args.criteria.split(",")
                for seed in (int(s) for s in args.seeds.split(","))]
        run_queue(jobs, lambda name, criterion, seed: one(name, criterion, seed, args.level, args.calib_n, Path(tmp)),
                  args.json, args.mem_gb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
