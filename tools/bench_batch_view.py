#!/usr/bin/env python3
"""Training throughput of a model whose export fixes the batch at 1: one sample per step (as before)
against the batch view of recover/batch_view.py (symbolic batch axis, outputs batch-first).

    .venv/bin/python tools/bench_batch_view.py --model ddddocr_common --samples 128 --batches 1,16,32

The pruned model is the cached one of tools/bench_finetune_goal.py (--work), pruned there if missing.
Each batch size runs one epoch of label-free distillation at a fixed rate (no range test, no held-out
split) on the same samples; samples/s counts training steps only (ONNX Runtime busy time).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxprune.load.data import Dataset  # noqa: E402
from onnxprune.recover.finetune import finetune  # noqa: E402
from bench_finetune_goal import pruned  # noqa: E402
from finetune_cases import task_case  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ddddocr_common")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--batches", default="1,16,32")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--work", default="/tmp/ft_goal")
    a = ap.parse_args(argv)
    case = task_case(a.model, a.samples)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model, _ = pruned(a.model, case, 0.5, work)
    data = Dataset(dict(case[2].inputs))
    for batch in (int(b) for b in a.batches.split(",")):
        started = time.perf_counter()
        res = finetune(model, data, 1, teacher=case[0], lr=1e-5, batch_size=batch, holdout=0.0, keep="last",
                       progress=False, threads=a.threads)
        wall = time.perf_counter() - started
        per_step = min(batch, len(data))
        print(f"batch {batch}: {res.steps_per_second * per_step:.1f} samples/s in training steps "
              f"({res.steps_per_second:.2f} steps/s), wall {wall:.1f} s for {len(data)} samples", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
