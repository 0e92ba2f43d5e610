#!/usr/bin/env python3
"""Replay the learning-rate range test's pick (recover/lrfind.py) on stored fine-tuning runs at other
tolerances, beside the task scores the same runs measured at each rate.

Each `auto` row of a bench_finetune_goal / bench_iterative JSON-lines file keeps its range test's held-out
losses (`lr_trials`). The test's own starting loss is not stored; the row's epoch-0 held-out loss stands in
for it (it only decides whether any rate beats the start). A fixed-rate run trains exactly as `auto` would at
that rate (the range test leaves no trace), so a rate's stored score is what a rule picking it gets.

    python tools/replay_lr.py docs/results/*.jsonl [--tolerances 0.02,0.05,0.1]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxprune.recover import lrfind  # noqa: E402


def runs(paths: list[str]) -> tuple[dict, dict]:
    """(key -> (trials, start loss, rate run)) of the latest auto row per key, and key -> {rate: score}.
    A key is (file, model, start, MACs, training samples, evaluation samples): runs of other waves, whose
    defaults differed, are not mixed."""
    tests, scores = {}, defaultdict(dict)
    for path in paths:
        for line in Path(path).read_text().splitlines():
            try:
                run = json.loads(line)
            except ValueError:
                continue
            if not isinstance(run, dict) or not isinstance(run.get("rows"), list):
                continue
            key = (Path(path).name, run.get("model"), run.get("start"), run.get("macs"), run.get("train"),
                   run.get("eval_n"))
            for row in run["rows"]:
                name = row.get("variant", "")
                if name == "auto" and row.get("lr_trials") and row.get("val_loss"):
                    tests[key] = ({float(k): v for k, v in row["lr_trials"].items()}, row["val_loss"][0], row.get("lr"))
                if row.get("score") is not None and name and "+" not in name:
                    rate = row.get("lr") if name == "auto" else float(name)
                    if rate is not None:
                        scores[key][rate] = row["score"]
    return tests, scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--tolerances", default="0.02,0.05,0.1")
    a = ap.parse_args(argv)
    tolerances = [float(t) for t in a.tolerances.split(",")]
    tests, scores = runs(a.files)
    print("| file | model | start | MACs | train | picks at " + " / ".join(f"{t:g}" for t in tolerances)
          + " | task score by rate (stored runs) |")
    print("|---|---|---|---|---|---|---|")
    for key, (trials, start, _) in tests.items():
        picks = [lrfind.pick(trials, start, tol) for tol in tolerances]
        known = ", ".join(f"{r:g}: {s}" for r, s in sorted(scores.get(key, {}).items()))
        print(f"| {' | '.join(str(k) for k in key[:5])} | {' / '.join(f'{p:g}' for p in picks)} | {known} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
