#!/usr/bin/env python3
"""The training step's memory plan for a pruned model and its teacher (recover/step_memory.py): bytes per
sample by what holds them, and the micro-batch the budget allows at --batch, with and without features.

Runs `finetune` for 0 epochs (the plan, the feature match and one held-out pass; no training) on a
workdir laid out by tools/bench_train_memory.py (dense.onnx, pruned.onnx, train.npz):

    .venv/bin/python tools/plan_step_memory.py --workdir /tmp/onnxprune_train_memory --batch 32 --samples 96
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Plan(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("training step:"):
            self.lines.append(record.getMessage())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--memory-mb", type=float, help="TrainSettings.memory_mb (default: the library's)")
    args = ap.parse_args()
    from onnxprune.load.data import input_ranks, load_npz
    from onnxprune.load.model import load_model
    from onnxprune.recover.finetune import finetune

    work = Path(args.workdir)
    student, teacher = load_model(work / "pruned.onnx"), load_model(work / "dense.onnx")
    data = load_npz(work / "train.npz", input_ranks(student), limit=args.samples)
    handler = _Plan()
    logger = logging.getLogger("onnxprune")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    extra = {"memory_mb": args.memory_mb} if args.memory_mb else {}
    for features in (0.0, 1.0):
        result = finetune(student, data, 0, teacher=teacher, batch_size=args.batch, progress=False, lr=1e-4,
                          features=features, **extra)
        print(json.dumps({"workdir": str(work), "batch": args.batch, "features": features,
                          "feature_tensors": len(result.features), "plan": handler.lines[-1] if handler.lines else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
