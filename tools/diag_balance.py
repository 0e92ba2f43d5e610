#!/usr/bin/env python3
"""Which distillation loss `distill="auto"` picks per model, and why: the dense model's output, the channel
axis recover/distill_weights.py finds, the spread of its channel variances, and whether a final Softmax is distilled
on its logits (KL) instead.

    .venv/bin/python tools/diag_balance.py --models digits,ppocr_cls,ppocr_rec,ddddocr_common,nudenet_320n [--samples 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.recover.distill_weights import channel_axis, spread, unbalanced  # noqa: E402
from onnxprune.recover.logits import softmax_input  # noqa: E402


def outputs(name: str, n: int):
    if name == "digits":
        import onnx
        model = onnx.load(str(ROOT / "fixtures" / "digits_cnn.onnx"))
        x = np.load(ROOT / "fixtures" / "digits_train.npz")
        feeds = {model.graph.input[0].name: x[x.files[0]][:n].astype(np.float32)}
        return model, [feeds]
    import tasks
    task = tasks.get(name)
    data = task.calibration(n)
    key = next(iter(data))
    model = task.model()
    rank = len(model.graph.input[0].type.tensor_type.shape.dim)
    if data[key].ndim == rank + 1:  # stacked per sample (N, 1, ...): one run per sample
        return model, [{key: data[key][i]} for i in range(len(data[key]))]
    return model, [{key: data[key]}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="digits,ppocr_cls,ppocr_rec,ddddocr_common,nudenet_320n")
    ap.add_argument("--samples", type=int, default=64)
    a = ap.parse_args(argv)
    print("| model | output shape | Softmax read (KL on its logits) | channel axis | channels | variance spread | auto picks |")
    print("|---|---|---|---|---|---|---|")
    for name in a.models.split(","):
        model, feeds = outputs(name, a.samples)
        sess = session(model)
        out_name = model.graph.output[0].name
        out = np.concatenate([sess.run([out_name], f)[0] for f in feeds])  # the axis joined does not matter: pooled
        logits = softmax_input(model, out_name)
        axis, var = channel_axis(out)
        wide = spread(out)
        pick = "kl (logits)" if logits else ("balanced" if unbalanced(out) else "kl")
        print(f"| {name} | {out.shape} | {'yes' if logits else 'no'} | {axis} | {len(var)} | {wide:.3g} | {pick} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
