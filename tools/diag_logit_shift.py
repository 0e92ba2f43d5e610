#!/usr/bin/env python3
"""How a pruned NudeNet moves its class scores: the mean shift of each face class's logit (pruned - dense)
over the anchors, by the dense score's band, on the task's test set and on its calibration set.

An error that only adds borderline detections shows as a positive shift in the 0.005-0.2 bands of the
test set; a shift there but not on the calibration set says the calibration data never showed the
pruned channels' role. Pruned models come from `tools/diag_plan.py ... --save DIR`. Usage:

    python tools/diag_logit_shift.py nudenet_320n_wide /tmp/plans/d0_0.8.onnx [more.onnx ...]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import tasks  # noqa: E402

BANDS = ((0.005, 0.05), (0.05, 0.2), (0.2, 1.0))


def class_logits(sess, x: np.ndarray) -> np.ndarray:
    """(classes, anchors over all images) logits of the class rows of a YOLOv8 output."""
    p = np.concatenate([sess.run(None, {"images": x[i:i + 1]})[0][0, 4:] for i in range(len(x))], 1)
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def shifts(dense: np.ndarray, pruned: np.ndarray, classes: list[int]) -> list[str]:
    out = []
    for c in classes:
        prob = 1 / (1 + np.exp(-dense[c]))
        for lo, hi in BANDS:
            m = (prob >= lo) & (prob < hi)
            if m.any():
                d = pruned[c][m] - dense[c][m]
                out.append(f"class {c:2d} dense [{lo:g}, {hi:g}) n={int(m.sum()):5d} shift {d.mean():+.2f} sd {d.std():.2f}")
    others = [k for k in range(dense.shape[0]) if k not in classes]
    m = 1 / (1 + np.exp(-dense[others])) >= 0.05
    out.append(f"other classes dense >= 0.05 n={int(m.sum())} shift {(pruned[others][m] - dense[others][m]).mean():+.2f}")
    return out


def main() -> int:
    warnings.filterwarnings("ignore")
    import onnx
    if len(sys.argv) < 3:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    task = tasks.get(sys.argv[1])
    faces = sorted(task.face_ids())
    dense_sess = tasks.session(task.model())
    sets = {"test": np.concatenate([f["images"] for f in task.evaluation().feeds]),
            "calibration": task.calibration(32)["images"]}
    dense = {k: class_logits(dense_sess, x) for k, x in sets.items()}
    for path in sys.argv[2:]:
        sess = tasks.session(onnx.load(path))
        for k, x in sets.items():
            print(f"== {path} on the {k} set")
            print("   " + "\n   ".join(shifts(dense[k], class_logits(sess, x), faces)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
