#!/usr/bin/env python3
"""Which detections a pruned NudeNet gains or loses against the dense model, with both models' scores.

For each evaluation image of the `nudenet_320n` task (tools/tasks.py), every face the pruned model
finds that matches no dense face of its class (EXTRA) and every dense face it misses (MISSED) is
printed with the box, the class and the highest score of that class among the anchors centred within
4 px of the box in both models, so one sees whether an error is a borderline score pushed over the
0.2 threshold or a new response. Pruned models come from `tools/diag_plan.py ... --save DIR`. Usage:

    python tools/diag_detections.py /tmp/plans/d0_0.8.onnx [more.onnx ...]
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


def main() -> int:
    warnings.filterwarnings("ignore")
    import onnx
    task = tasks.get("nudenet_320n")
    ev = task.evaluation()
    faces = task.face_ids()
    dense = [o[0] for o in task.run(tasks.session(task.model()), ev)]
    for path in sys.argv[1:]:
        pruned = [o[0] for o in task.run(tasks.session(onnx.load(path)), ev)]
        print(f"== {path}")
        for i, (d, p) in enumerate(zip(dense, pruned)):
            dd = [x for x in task.decode(d) if x[0] in faces]
            pp = [x for x in task.decode(p) if x[0] in faces]
            for kind, found in (("EXTRA", _unmatched(pp, dd)), ("MISSED", _unmatched(dd, pp))):
                for c, b in found:
                    print(f"  image {i:2d} {kind:6s} class {c:2d} box {np.round(b).astype(int).tolist()} "
                          f"score dense {_near(d, b, c):.3f} pruned {_near(p, b, c):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
