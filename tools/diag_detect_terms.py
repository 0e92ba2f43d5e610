#!/usr/bin/env python3
"""The detect loss's terms on a pruned model before training, on different slices of the training inputs.

    .venv/bin/python tools/diag_detect_terms.py nudenet_320n PRUNED.onnx --train-from nudenet_320n_photos

For each slice (the first 64 samples, which the loss's scales are read from; 64 spread over the data) prints
each part's term (autodiff/detect_loss.part_terms), the confident-anchor score term (focus_term), the
anchors where the teacher's top score reaches 0.5, and the share of the score rows' KL at anchors whose
teacher score reaches 0.5 and 0.1: how much the score rows weigh once training sees the whole data.
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

from onnxprune.autodiff.detect_loss import anchor_weights, binary_kl, focus_term, part_terms  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.recover.detect_distill import spec_from_outputs  # noqa: E402


def outputs(model: onnx.ModelProto, x: np.ndarray, idx) -> np.ndarray:
    s, name = session(model), model.graph.input[0].name
    return np.concatenate([s.run(None, {name: x[i]})[0] for i in idx])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task")
    ap.add_argument("pruned")
    ap.add_argument("--train-from", help="training inputs from this task's calibration set (default: the task's)")
    ap.add_argument("--train", type=int, default=1024)
    a = ap.parse_args(argv)
    if not Path(a.pruned).is_file():
        print(f"error: no such model file: {a.pruned}", file=sys.stderr)
        return 2
    import tasks
    from bench_finetune_goal import train_inputs
    dense, student = tasks.get(a.task).model(), onnx.load(a.pruned)
    data = train_inputs(a.train_from or a.task, a.train)
    x = next(iter(data.inputs.values()))
    spec = None
    for label, idx in (("first 64", range(64)), ("64 spread", range(0, len(x), max(1, len(x) // 64)))):
        s, t = outputs(student, x, idx), outputs(dense, x, idx)
        spec = spec or spec_from_outputs(s, t, focus=1.0)  # the parts the loss finds on the first 64
        rows = spec.score[spec.rows]
        w = anchor_weights(t, spec)
        kl = np.sum(binary_kl(np.clip(s[:, rows], 0, 1), t[:, rows]), axis=1, keepdims=True)
        print(json.dumps({"slice": label, "part_terms": [float(v) for v in part_terms(s, t, spec)],
                          "focus_term": focus_term(s, t, spec), "confident_anchors": int((w >= 0.5).sum()),
                          "score_kl_share_w_0.5": round(float(kl[w >= 0.5].sum() / kl.sum()), 3),
                          "score_kl_share_w_0.1": round(float(kl[w >= 0.1].sum() / kl.sum()), 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
