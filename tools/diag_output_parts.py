#!/usr/bin/env python3
"""Which part of a packed output costs a pruned model its task score: swap one part at a time.

    .venv/bin/python tools/diag_output_parts.py nudenet_320n PRUNED.onnx [--eval-n 16]

A detector such as YOLOv8 packs box rows (pixels) and class rows (probabilities) into one output
(N, 4 + C, anchors). The parts are found as fisher and the fidelity report find them
(score/output_parts.py: rows split where their standard deviations jump by more than PART_GAP) on the
dense model's outputs over the evaluation inputs. For each part the task is scored twice, from outputs
that are the pruned model's with that part's rows taken from the dense model ("part fixed"), and the
dense model's with that part's rows taken from the pruned model ("part damaged"). A part whose fix
brings the score back is where training should look.

Also printed per part: the squared error relative to the part's variance, overall and at the anchors
where the dense model is confident (its largest score above the task's threshold), since a detection is
decided there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.score.output_parts import parts  # noqa: E402


class Replay:
    """A stand-in session that returns fixed outputs, one list per evaluation feed in order."""

    def __init__(self, outputs: list[list[np.ndarray]]):
        self.outputs, self.i = outputs, 0

    def run(self, names, feed):
        out = self.outputs[self.i]
        self.i += 1
        return out


def swapped(base: list[list[np.ndarray]], donor: list[list[np.ndarray]], rows: np.ndarray) -> list[list[np.ndarray]]:
    """`base`'s first output with `rows` (axis 1) from `donor`."""
    out = []
    for b, d in zip(base, donor):
        x = b[0].copy()
        x[:, rows] = d[0][:, rows]
        out.append([x, *b[1:]])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task")
    ap.add_argument("pruned")
    ap.add_argument("--eval-n", type=int)
    ap.add_argument("--conf", type=float, default=0.2, help="a score above this at an anchor makes it foreground")
    a = ap.parse_args(argv)
    import tasks
    task = tasks.get(a.task)
    ev = task.evaluation(a.eval_n)
    dense_out = task.run(session(task.model()), ev)
    pruned_out = task.run(session(onnx.load(a.pruned)), ev)
    dense_preds = task.predict(Replay(dense_out), ev)

    def score(outs):
        return round(task.score(task.predict(Replay(outs), ev), ev, dense_preds)["score"], 2)

    d = np.concatenate([o[0] for o in dense_out])  # (N, rows, anchors)
    p = np.concatenate([o[0] for o in pruned_out])
    std = np.moveaxis(d, 1, 0).reshape(d.shape[1], -1).std(axis=1)
    found = parts({"out": std})
    fg = None
    report = {"pruned": score(pruned_out), "parts": []}
    for _, rows in found:
        part = {"rows": [int(rows[0]), int(rows[-1])] if len(rows) > 1 else [int(rows[0])],
                "fixed": score(swapped(pruned_out, dense_out, rows)),
                "damaged": score(swapped(dense_out, pruned_out, rows))}
        var = float(d[:, rows].var()) or 1.0
        part["rel_err"] = round(float(((p[:, rows] - d[:, rows]) ** 2).mean()) / var, 4)
        if len(rows) < d.shape[1] and d[:, rows].min() >= 0 and d[:, rows].max() <= 1:  # probabilities: scores
            fg = d[:, rows].max(axis=1) >= a.conf  # (N, anchors)
        report["parts"].append(part)
    if fg is not None:
        for (_, rows), part in zip(found, report["parts"]):
            var = float(d[:, rows].var()) or 1.0
            err = ((p[:, rows] - d[:, rows]) ** 2).mean(axis=1)  # (N, anchors)
            part["rel_err_foreground"] = round(float(err[fg].mean()) / var, 4)
            part["rel_err_background"] = round(float(err[~fg].mean()) / var, 4)
        report["foreground_anchors"] = int(fg.sum())
        report["anchors"] = int(fg.size)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
