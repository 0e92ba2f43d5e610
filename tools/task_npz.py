#!/usr/bin/env python3
"""Write a task's model and data where the command line reads them: DIR/dense.onnx (as the task scores it),
DIR/calib.npz (--calib-n calibration samples) and DIR/train.npz (--train-n unlabelled inputs, no 'labels'),
the same draws as tools/bench_finetune_goal.py and tools/bench_iterative.py make (disjoint from the test set).

    .venv/bin/python tools/task_npz.py ppocr_rec /tmp/rec_cli --train-n 1024 --calib-n 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write(task_name: str, folder: Path, train_n: int, calib_n: int) -> dict[str, tuple]:
    """Writes the three files; returns each array's shape and the task's input shapes."""
    import tasks
    task = tasks.get(task_name)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(task.model(), str(folder / "dense.onnx"))
    np.savez(folder / "calib.npz", **task.calibration(calib_n))
    np.savez(folder / "train.npz", **task.calibration(train_n))
    return {k: v.shape for k, v in np.load(folder / "train.npz").items()} | {"input_shapes": task.input_shapes()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", help="a task of tools/tasks.py (ppocr_rec, ppocr_cls, ...)")
    ap.add_argument("folder")
    ap.add_argument("--train-n", type=int, default=1024)
    ap.add_argument("--calib-n", type=int, default=32)
    a = ap.parse_args()
    print(write(a.task, Path(a.folder), a.train_n, a.calib_n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
