#!/usr/bin/env python3
"""Gradients of a real model against float64 central differences, on the weights of chosen op types.

    .venv/bin/python tools/gradcheck_real.py --model ddddocr_common --shape input1:1x1x64x48 --ops LSTM,Conv

For the first node of each op type, every float weight input is trained; on the 3 coordinates with the
largest gradient of each (well above finite-difference noise) the ORT float32 gradient of an MSE loss is
printed next to the float64 difference quotient computed with onnx.reference on the model cast to float64.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.autodiff import build_training_graph, read_weights
from onnxprune.autodiff.gradcheck import _reference, to_double
from onnxprune.autodiff.losses import numpy_loss
from onnxprune.load import zoo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ddddocr_common")
    ap.add_argument("--shape", default="input1:1x1x64x48")
    ap.add_argument("--ops", default="LSTM,Conv")
    a = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    ort.set_default_logger_severity(3)
    name, dims = a.shape.split(":")
    m = onnx.load(str(zoo.fetch(a.model)))
    inits = {i.name for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    names = []
    for op in a.ops.split(","):
        node = next(n for n in m.graph.node if n.op_type == op)
        names += [t for t in node.input if t in inits and t not in names]
    x = np.random.default_rng(0).random(tuple(int(d) for d in dims.split("x"))).astype(np.float32)
    tg = build_training_graph(m, names, "mse", input_shapes={name: x.shape})
    w = read_weights(m, names)
    y = ort.InferenceSession(m.SerializeToString()).run(None, {name: x})[0]
    target = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    sess = ort.InferenceSession(tg.model.SerializeToString())
    grads = dict(zip(names, sess.run([tg.grads[n] for n in names], {name: x, **w, tg.target: target})))
    ref = _reference(to_double(m))
    wd = {k: v.astype(np.float64) for k, v in w.items()}

    def loss(ws: dict) -> float:
        return numpy_loss("mse", ref.run(None, {name: x.astype(np.float64), **ws})[0], target)

    worst = 0.0
    print("| weight | index | ORT float32 | float64 difference |\n|---|---|---|---|")
    for n in names:
        for p in np.argsort(-np.abs(grads[n]).ravel())[:3]:
            h = 1e-4 * max(1.0, abs(wd[n].flat[p]))
            plus, minus = wd[n].copy(), wd[n].copy()
            plus.flat[p] += h
            minus.flat[p] -= h
            fd = (loss({**wd, n: plus}) - loss({**wd, n: minus})) / (2 * h)
            worst = max(worst, abs(grads[n].flat[p] - fd) / max(abs(fd), 1e-6))
            print(f"| {n} | {p} | {grads[n].flat[p]:.7f} | {fd:.7f} |")
    print(f"worst relative error {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
