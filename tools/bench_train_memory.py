#!/usr/bin/env python3
"""Peak memory of fine-tuning a real model at a given batch (issue 10: PP-OCRv4 rec at batch 32, <= 2 GB).

Two fresh processes, so the figure is the fine-tuning's own:
  1. prepare: the model pruned to --macs of its MACs (l2, local, no recovery: fast and data-free; the
     widths are what training memory depends on) and --samples rendered training inputs (tools/tasks.py),
     written to --workdir;
  2. train: `onnxprune finetune`-equivalent library call (label-free distillation from the dense model,
     --epochs at --batch) on them; prints its peak resident memory (ru_maxrss), the resident memory
     before training, the trainable and frozen weight counts, and the wall time.

    .venv/bin/python tools/bench_train_memory.py --model ppocr_rec --batch 32 --samples 256 [--features 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare(args) -> None:
    import numpy as np
    import onnx
    import tasks
    from onnxprune.api import prune

    task = tasks.get(args.model)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    dense = task.model()
    onnx.save(dense, work / "dense.onnx")
    result = prune(dense, target_macs=args.macs, criterion="l2", scope="local", recover="none", bench_rounds=0,
                   input_shapes=task.input_shapes())
    onnx.save(result.model, work / "pruned.onnx")
    data = task.calibration(args.samples)
    np.savez(work / "train.npz", **data)


def train(args) -> None:
    from onnxprune.load.data import load_npz, input_ranks
    from onnxprune.load.model import load_model
    from onnxprune.recover.finetune import finetune

    work = Path(args.workdir)
    student, teacher = load_model(work / "pruned.onnx"), load_model(work / "dense.onnx")
    data = load_npz(work / "train.npz", input_ranks(student), limit=args.samples)
    before = _rss_mb()
    started = time.perf_counter()
    extra = {"memory_mb": args.memory_mb} if args.memory_mb else {}
    result = finetune(student, data, args.epochs, teacher=teacher, batch_size=args.batch, progress=False,
                      threads=args.threads, features=args.features, lr=args.lr, **extra)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"model": args.model, "batch": args.batch, "samples": len(data), "epochs": args.epochs,
                      "features": args.features, "feature_tensors": len(result.features),
                      "memory_mb": args.memory_mb, "load_1min": round(os.getloadavg()[0], 1),
                      "peak_rss_mb": round(peak), "rss_before_training_mb": round(before),
                      "trainable_weights": len(result.trainable), "frozen_weights": len(result.frozen),
                      "frozen_by": sorted(set(result.frozen.values()))[:5], "best_epoch": result.best_epoch,
                      "seconds": round(time.perf_counter() - started, 1),
                      "steps_per_second": round(result.steps_per_second, 3)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ppocr_rec")
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--features", type=float, default=0.0, help="feature distillation weight (0: outputs only)")
    ap.add_argument("--lr", type=float, help="a fixed rate (default: the range test picks it)")
    ap.add_argument("--memory-mb", type=float, help="TrainSettings.memory_mb (default: the library's)")
    ap.add_argument("--workdir", default="/tmp/onnxprune_train_memory")
    ap.add_argument("--stage", choices=["all", "prepare", "train"], default="all")
    args = ap.parse_args()
    if args.stage == "prepare":
        prepare(args)
    elif args.stage == "train":
        train(args)
    else:
        base = [sys.executable, __file__, *sys.argv[1:]]
        if not (Path(args.workdir) / "train.npz").exists():
            subprocess.run([*base, "--stage", "prepare"], check=True)
        subprocess.run([*base, "--stage", "train"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
