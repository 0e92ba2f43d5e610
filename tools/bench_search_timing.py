#!/usr/bin/env python3
"""Does a search's front survive re-timing? Time a finished search's candidates again, several passes.

    python tools/bench_search_timing.py /tmp/search9/work/serial --passes 3 --rounds 40

Each pass is the search's own timing pass (onnxprune/search/timing.py: every round runs the dense
model and every candidate once, in a shuffled order, each the fastest of 2 runs). From the same raw
times it compares latency estimators: the search's median of per-round ratios, the ratio of the fastest
runs, the ratio of median times and of 25th percentiles. For
each: how far the same candidate's ratio moves between passes (median and largest range over the
candidates) and the fronts: strict, and with the search's tie width. Quality comes from the
search's own candidate files (it is deterministic: the same model scores the same).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxprune.graph.model_graph import resolve_input_shapes  # noqa: E402
from onnxprune.load.data import synthetic_dataset  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.search.front import pareto_front, tie_width  # noqa: E402
from onnxprune.search.timing import summarize, time_rounds  # noqa: E402

ESTIMATORS = {
    "median of per-round ratios (search)": lambda t: np.median(t[:, 1:] / t[:, :1], 0),
    "fastest / fastest": lambda t: t[:, 1:].min(0) / t[:, 0].min(),
    "ratio of medians": lambda t: np.median(t[:, 1:], 0) / np.median(t[:, 0]),
    "ratio of 25th percentiles": lambda t: np.percentile(t[:, 1:], 25, 0) / np.percentile(t[:, 0], 25),
}


def raw_passes(folder: Path, passes: int, rounds: int) -> tuple[list[dict], np.ndarray, list[float]]:
    """The search's candidates, their raw times (passes, rounds, 1 + candidates) and the load per pass."""
    settings = json.loads((folder / "search.json").read_text())
    points = json.loads((folder / "pareto.json").read_text())["candidates"]
    dense_model = onnx.load(settings["model"])
    dense = session(dense_model)
    feed = next(synthetic_dataset(dense, resolve_input_shapes(dense_model, None), samples=1).batches(1))
    sessions = [dense] + [session(str(folder / "candidates" / p["model_file"])) for p in points]
    times, loads = [], []
    for k in range(passes):
        loads.append(os.getloadavg()[0])
        times.append(time_rounds(sessions, feed, rounds=rounds, seed=k))
        print(f"# pass {k + 1}: load {loads[-1]:.1f}", file=sys.stderr, flush=True)
    return points, np.array(times), loads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("search", help="a finished search's folder (holding search.json and pareto.json)")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--json", help="write the raw times and results here")
    args = ap.parse_args()
    points, times, loads = raw_passes(Path(args.search), args.passes, args.rounds)
    ids = [p["id"] for p in points]
    quality = {p["id"]: p["quality"] for p in points}
    ties = []
    for t in times:
        noise = float(np.median([s["latency_noise"] for s in summarize(t)]))
        ties.append(tie_width(noise))
    print(f"{len(ids)} candidates, {args.passes} passes of {args.rounds} rounds, load {', '.join(f'{x:.1f}' for x in loads)}; "
          f"tie widths {', '.join(f'{x:.3f}' for x in ties)}\n")
    print("| estimator | between-pass range, median | largest | strict fronts (sizes) | same | with ties (sizes) | same |")
    print("|---|---|---|---|---|---|---|")
    out = {"ids": ids, "loads": loads, "ties": ties, "rows": {}}
    for name, estimate in ESTIMATORS.items():
        ratios = np.array([estimate(t) for t in times])
        spread = ratios.max(0) - ratios.min(0)
        fronts = {"strict": [], "tied": []}
        for r, tie in zip(ratios, ties):
            pts = [{"id": i, "latency_ratio": float(v), "quality": quality[i]} for i, v in zip(ids, r)]
            fronts["strict"].append([p["id"] for p in pareto_front(pts)])
            fronts["tied"].append([p["id"] for p in pareto_front(pts, tie=tie)])
        cells = [f"{', '.join(str(len(f)) for f in fronts[k])} | {'yes' if all(f == fronts[k][0] for f in fronts[k]) else 'no'}"
                 for k in ("strict", "tied")]
        print(f"| {name} | {np.median(spread):.3f} | {spread.max():.3f} | {cells[0]} | {cells[1]} |")
        out["rows"][name] = {"ratios": ratios.tolist(), "fronts": fronts}
    for k, f in enumerate(out["rows"]["median of per-round ratios (search)"]["fronts"]["tied"]):
        print(f"\npass {k + 1}, search's front: {' '.join(f)}", end="")
    print()
    if args.json:
        out["times"] = times.tolist()
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
