#!/usr/bin/env python3
"""A finished search's fronts re-drawn with the worst output or part as quality (check/fidelity.py):
each candidate model is compared with the dense model on the search's evaluation data, and the front
is rebuilt from the recorded latencies with the recorded tie width and with none.

    python tools/search_front_parts.py /tmp/search9/work --runs serial,ray2,local2
(the layout tools/bench_search.py writes: WORK/data/{model.onnx,eval.npz}, WORK/RUN/pareto.json)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path)
    ap.add_argument("--runs", default="serial,ray2,local2")
    args = ap.parse_args(argv)
    from onnxprune.check.fidelity import compare
    from onnxprune.check.gates import worst_output
    from onnxprune.load.data import load_npz
    from onnxprune.load.runtime import session
    from onnxprune.search.front import pareto_front

    dense = session(str(args.work / "data" / "model.onnx"))
    data = load_npz(args.work / "data" / "eval.npz", {i.name: len(i.shape) for i in dense.get_inputs()})
    quality: dict[str, float] = {}
    for run in args.runs.split(","):
        doc = json.loads((args.work / run / "pareto.json").read_text())
        for c in doc["candidates"]:
            if c["id"] not in quality:  # the same seeds give the same models in every run
                model = args.work / run / "candidates" / c["model_file"]
                quality[c["id"]] = worst_output(compare(dense, session(str(model)), data).as_dict())[1]
        points = [dict(c, quality=quality[c["id"]]) for c in doc["candidates"]]
        for tie in (float(doc.get("tie_width", 0.0)), 0.0):
            front = [p["id"] for p in pareto_front(points, tie=tie)]
            print(f"{run}: tie {tie:.4f}: {len(front)} points: {' '.join(front)}")
    print("worst output or part cosine:", {k: round(v, 4) for k, v in sorted(quality.items())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
