#!/usr/bin/env python3
"""CPU seconds (best of --repeat) of the pure-Python pieces a big graph's prune spends its time in,
each called alone on one generated chain (tools/make_chain.py), plus a digest of what they return, so
two checkouts can be compared piece by piece on a shared machine (run it from each checkout's root,
or with PYTHONPATH=OTHER_TREE; the digests must match):

    python tools/bench_analysis_parts.py --nodes 30000
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_chain import chain_model  # noqa: E402


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=30000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    import onnx
    from onnxprune.check.finite import check_finite
    from onnxprune.couple.dependency import build_dependency
    from onnxprune.graph.cost import count_macs, count_params
    from onnxprune.graph.model_graph import ModelGraph
    from onnxprune.load.parked import Parked

    model = chain_model(args.nodes)
    digest = hashlib.sha256()
    rows = []
    seconds, graph = _best(lambda: ModelGraph(model), args.repeat)
    rows.append(("ModelGraph", seconds))
    digest.update(repr(sorted(graph.shapes.items())).encode())
    seconds, dep = _best(lambda: build_dependency(graph), args.repeat)
    rows.append(("build_dependency", seconds))
    digest.update(dep.labels.tobytes() + dep.offsets.tobytes())
    digest.update(repr([(str(s), g.channels.tolist(), g.frozen.tolist()) for g in dep.groups for s in g.slots]).encode())
    removed = np.random.default_rng(0).random(dep.num_channels) < 0.3
    seconds, kept = _best(lambda: dep.kept_indices(removed), args.repeat)
    rows.append(("kept_indices", seconds))
    digest.update(repr([(str(s), v.tolist()) for s, v in kept.items()]).encode())
    seconds, counts = _best(lambda: (count_params(graph), count_macs(graph)), args.repeat)
    rows.append(("count_params + count_macs", seconds))
    digest.update(repr(counts).encode())
    seconds, _ = _best(lambda: check_finite(model), args.repeat)
    rows.append(("check_finite", seconds))
    seconds, parked = _best(lambda: Parked(model), args.repeat)
    rows.append(("park (write the model to a work file)", seconds))
    digest.update(Path(parked.path).read_bytes())
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.onnx")
        seconds, _ = _best(lambda: onnx.save_model(model, path), args.repeat)
    rows.append(("onnx.save_model (reference)", seconds))
    print(f"| piece ({args.nodes:,}-node chain) | CPU s, best of {args.repeat} |")
    print("|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.3f} |")
    print(f"\ndigest {digest.hexdigest()[:16]} (the same in two checkouts: the same results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
