#!/usr/bin/env python3
"""CPU and wall seconds of one default prune of a task model (tools/tasks.py) at a MACs target, with the
pruned model's task score, as one JSON line; or of one of its parts: `--part fisher` (the fisher scores
alone, `--save` keeps them for `--compare A.npy B.npy`), `--part stats-add` (ChannelStats.add on conv-shaped
activations). Compare two checkouts by running it under each one's PYTHONPATH: onnxprune is imported from
there before anything of this tree, so the work is the other checkout's and the task and data are this one's.
(tools/bench_calib_speed.py times the command line's prune in a child process, with its peak memory.)

    python tools/bench_prune_cpu.py --model nudenet_320n --calib-n 32
    PYTHONPATH=/tmp/old python tools/bench_prune_cpu.py --model nudenet_320n --calib-n 32
    python tools/bench_prune_cpu.py --model nudenet_320n --calib-n 8 --part fisher --save new.npy
    python tools/bench_prune_cpu.py --compare old.npy new.npy
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import onnxprune  # first: PYTHONPATH decides which checkout prunes
from onnxprune.api import prune
from onnxprune.options import PruneOptions, Target

sys.path.append(str(Path(__file__).resolve().parent))  # appended: an onnxprune on PYTHONPATH stays first


def _fisher(dense, calib) -> np.ndarray:
    from onnxprune.couple.dependency import build_dependency
    from onnxprune.graph.model_graph import ModelGraph
    from onnxprune.score.fisher import PROBES, _fisher_scores
    from onnxprune.stages import as_dataset
    calib = as_dataset(calib, dense)  # as prune reads it: a file, feed dicts or a Dataset
    return _fisher_scores(build_dependency(ModelGraph(dense, calib.sample_shapes())), calib, PROBES, 0)


def _stats_add() -> dict:
    """ms per ChannelStats.add of 4 x C x HW ReLU-like activations (20 calls after one)."""
    from onnxprune.score.calibration import ChannelStats
    out = {}
    for c, hw in ((16, 160 * 160), (32, 80 * 80), (64, 40 * 40), (128, 20 * 20)):
        x = np.maximum(np.random.default_rng(0).standard_normal((4, c, hw)).astype(np.float32), 0)
        st = ChannelStats(1, want_gram=True)
        st.add(x)
        start = time.perf_counter()
        for _ in range(20):
            st.add(x)
        out[f"{c}ch_ms"] = round((time.perf_counter() - start) / 20 * 1e3, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a task of tools/tasks.py, or digits (the fixture)")
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--calib-n", type=int, help="calibration samples (default 32; digits: the fixture's 256)")
    ap.add_argument("--part", choices=("prune", "fisher", "stats-add"), default="prune")
    ap.add_argument("--save", help="--part fisher: write the scores here (.npy)")
    ap.add_argument("--compare", nargs=2, metavar="NPY", help="only print the largest relative difference of two score files")
    a = ap.parse_args(argv)
    line = {"onnxprune": str(Path(onnxprune.__file__).parent.parent), "part": a.part}
    if a.compare:
        old, new = (np.load(f) for f in a.compare)
        print(json.dumps({"channels": len(old), "max_rel_diff": float((np.abs(new - old) / np.abs(old)).max())}))
        return 0
    if a.part == "stats-add":
        print(json.dumps({**line, **_stats_add()}))
        return 0
    from finetune_cases import digits_case, task_case
    dense, calib, _, score, shapes = digits_case(1, a.calib_n) if a.model == "digits" else \
        task_case(a.model, 1, None, a.calib_n or 32)
    cpu, wall = time.process_time(), time.perf_counter()
    if a.part == "fisher":
        scores = _fisher(dense, calib)
        if a.save:
            np.save(a.save, scores)
    else:
        result = prune(dense, calib=calib, options=PruneOptions(target=Target(macs=a.macs), input_shapes=shapes,
                                                                bench_rounds=0))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    line.update(model=a.model, macs=a.macs, calib_n=a.calib_n, cpu_s=round(cpu, 1), wall_s=round(wall, 1))
    if a.part == "prune":
        line["score"] = round(score(result.model), 2)
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
