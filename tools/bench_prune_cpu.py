#!/usr/bin/env python3
"""CPU and wall seconds of one default prune of a task model (tools/tasks.py) at a MACs target, with the
pruned model's task score, as one JSON line. Compare two checkouts by running it under each one's
PYTHONPATH: onnxprune is imported from there before anything of this tree, so the prune is the other
checkout's and the task and data are this one's.

    python tools/bench_prune_cpu.py --model nudenet_320n --calib-n 32
    PYTHONPATH=/tmp/old python tools/bench_prune_cpu.py --model nudenet_320n --calib-n 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import onnxprune  # first: PYTHONPATH decides which checkout prunes
from onnxprune.api import prune
from onnxprune.options import PruneOptions, Target

sys.path.append(str(Path(__file__).resolve().parent))  # appended: an onnxprune on PYTHONPATH stays first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a task of tools/tasks.py, or digits (the fixture)")
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--calib-n", type=int, default=32, help="calibration samples (digits: the fixture's 256)")
    a = ap.parse_args(argv)
    from finetune_cases import digits_case, task_case
    dense, calib, _, score, shapes = digits_case(1) if a.model == "digits" else task_case(a.model, 1, None, a.calib_n)
    cpu, wall = time.process_time(), time.perf_counter()
    result = prune(dense, calib=calib, options=PruneOptions(target=Target(macs=a.macs), input_shapes=shapes,
                                                            bench_rounds=0))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(json.dumps({"onnxprune": str(Path(onnxprune.__file__).parent.parent), "model": a.model, "macs": a.macs,
                      "calib_n": a.calib_n, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                      "score": round(score(result.model), 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
