#!/usr/bin/env python3
"""Peak memory and exit code of every resource bomb in tests/test_hostile.py, each run as
`python -m onnxprune ...` in a child process (the same address-space cap as the tests).

    python tools/bench_hostile.py

Prints one row per case: exit code, stderr line count, the largest child RSS so far (ru_maxrss of
RUSAGE_CHILDREN: a running maximum, so an upper bound for each case) and wall
time. The goal (issue 15): every bomb refused with exit 2 and one line, peak memory under 2 GB.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import test_hostile as cases  # noqa: E402

BOMBS = [cases.fold_bomb, cases.npz_with_unused_huge_array, cases.npz_with_huge_input_array,
         cases.huge_input_shape, cases.bench_huge_batch, cases.bench_huge_rounds, cases.bomb_png]


def main() -> int:
    print(f"{'case':32} {'exit':>4} {'lines':>5} {'max RSS MB':>12} {'seconds':>8}")
    for case in BOMBS:
        with tempfile.TemporaryDirectory() as folder:
            argv, expected = case(Path(folder))
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            start = time.perf_counter()
            done = cases.run_capped(argv, Path(folder))
            seconds = time.perf_counter() - start
            # ru_maxrss of children is the largest child so far; each case runs alone, in order
            peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
            mark = "" if done.returncode == expected else f"  (expected {expected})"
            print(f"{case.__name__:32} {done.returncode:>4} {len(done.stderr.splitlines()):>5} {peak:>12.0f} "
                  f"{seconds:>8.1f}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
