#!/usr/bin/env python3
"""Which detections a pruned NudeNet gains or loses against the dense model, with both models' scores.

For each evaluation image of the `nudenet_320n` task (tools/tasks.py), every face the pruned model
finds that matches no dense face of its class (EXTRA) and every dense face it misses (MISSED) is
printed with the box, the class and the highest score of that class among the anchors centred within
4 px of the box in both models, so one sees whether an error is a borderline score pushed over the
0.2 threshold or a new response. Pruned models come from `tools/diag_plan.py ... --save DIR`. Usage:

    python tools/diag_detections.py /tmp/plans/d0_0.8.onnx [more.onnx ...]
    python tools/diag_detections.py --task nudenet_320n_wide /tmp/plans/d0_0.8.onnx   # the 96-image set

Each EXTRA line also says what the dense model reports there (`dense there`): another face class on the
same box (a class swap), a non-face class, or nothing (a new box). The last line per model counts them.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import tasks  # noqa: E402
from tasks import iou_matrix  # noqa: E402


def _near(out: np.ndarray, box: np.ndarray, cls: int) -> float:
    """The highest score of `cls` among the anchors centred within 4 px of the box's centre."""
    rows = out[0].T
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    near = np.flatnonzero((abs(rows[:, 0] - cx) < 4) & (abs(rows[:, 1] - cy) < 4))
    return float(out[0][4 + cls][near].max()) if len(near) else float("nan")


def _unmatched(these, those) -> list:
    return [(c, b) for c, b in these
            if max((iou_matrix(b, ob)[0, 0] for oc, ob in those if oc == c), default=0.0) < 0.5]


def _there(dense_all: list, box: np.ndarray, faces: set[int]) -> str:
    """What the dense model reports on this box (IoU >= 0.5): a face class (a swap), another class, or nothing."""
    hits = [c for c, b in dense_all if iou_matrix(box, b)[0, 0] >= 0.5]
    if any(c in faces for c in hits):
        return "swap"
    return "other-class" if hits else "new"


def main() -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--task", default="nudenet_320n", help="a NudeNet task of tools/tasks.py (its test set)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import onnx
    task = tasks.get(args.task)
    ev = task.evaluation()
    faces = task.face_ids()
    dense = [o[0] for o in task.run(tasks.session(task.model()), ev)]
    for path in args.models:
        pruned = [o[0] for o in task.run(tasks.session(onnx.load(path)), ev)]
        print(f"== {path}")
        kinds: dict[str, int] = {}
        for i, (d, p) in enumerate(zip(dense, pruned)):
            dense_all = task.decode(d)
            dd = [x for x in dense_all if x[0] in faces]
            pp = [x for x in task.decode(p) if x[0] in faces]
            for kind, found in (("EXTRA", _unmatched(pp, dd)), ("MISSED", _unmatched(dd, pp))):
                for c, b in found:
                    there = _there(dense_all, b, faces) if kind == "EXTRA" else ""
                    kinds[f"{kind} {there}".strip()] = kinds.get(f"{kind} {there}".strip(), 0) + 1
                    print(f"  image {i:2d} {kind:6s} class {c:2d} box {np.round(b).astype(int).tolist()} "
                          f"score dense {_near(d, b, c):.3f} pruned {_near(p, b, c):.3f} {there}")
        print("  counts: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
