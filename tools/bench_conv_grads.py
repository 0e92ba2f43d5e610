#!/usr/bin/env python3
"""One Conv's training step (forward, MSE loss, weight gradient) per weight-gradient form, interleaved.

    python tools/bench_conv_grads.py [--layers stem,s1down,...] [--forms channel_first,stacked,conv]
                                     [--rounds 7] [--steps 5]

The layers are ResNet-18's at 112x112, batch 16 (tools/bench_training.py --net resnet18). Each form is
`rules/conv.WEIGHT_GRAD_FORM` forced for the whole graph; the graphs run on the session
bench_training's trainer uses (NCHWc forward, one thread). Prints the median milliseconds per step of
each form and its ratio to the first. The machine is shared: read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune.autodiff import build_training_graph  # noqa: E402
from onnxprune.autodiff.rules import conv  # noqa: E402
from onnxprune.autodiff.runner import fast_session  # noqa: E402

# name: (input shape, weight shape, stride, pad)
LAYERS = {
    "stem": ((16, 3, 112, 112), (64, 3, 7, 7), 2, 3),
    "s0": ((16, 64, 28, 28), (64, 64, 3, 3), 1, 1),
    "s1down": ((16, 64, 28, 28), (128, 64, 3, 3), 2, 1),
    "s1proj": ((16, 64, 28, 28), (128, 64, 1, 1), 2, 0),
    "s1": ((16, 128, 14, 14), (128, 128, 3, 3), 1, 1),
    "s2down": ((16, 128, 14, 14), (256, 128, 3, 3), 2, 1),
    "s2": ((16, 256, 7, 7), (256, 256, 3, 3), 1, 1),
    "s3down": ((16, 256, 7, 7), (512, 256, 3, 3), 2, 1),
    "s3": ((16, 512, 4, 4), (512, 512, 3, 3), 1, 1),
}


def one_conv(x_shape, w_shape, stride: int, pad: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal(w_shape) * 0.05).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[stride] * 2, pads=[pad] * 4)
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def runner(layer: str, form: str):
    x_shape, w_shape, stride, pad = LAYERS[layer]
    conv.WEIGHT_GRAD_FORM = form
    try:
        tg = build_training_graph(one_conv(x_shape, w_shape, stride, pad), loss="mse",
                                  input_shapes={"x": x_shape})
    finally:
        conv.WEIGHT_GRAD_FORM = "auto"
    sess, filters = fast_session(tg.model, 1, x_shape[0], ())
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    names = [i.name for i in sess.get_inputs()]
    feeds = {"x": x}
    probe = onnx.shape_inference.infer_shapes(tg.model)
    for v in probe.graph.input:
        if v.name == tg.target:
            feeds[tg.target] = np.zeros([d.dim_value or x_shape[0] for d in v.type.tensor_type.shape.dim], np.float32)
    if tg.target not in feeds:  # target shape unknown to shape inference: the conv output's
        o = [(s + 2 * pad - k) // stride + 1 for s, k in zip(x_shape[2:], w_shape[2:])]
        feeds[tg.target] = np.zeros([x_shape[0], w_shape[0]] + o, np.float32)
    for name in names:
        if name not in feeds:
            feeds[name] = numpy_helper.to_array(next(i for i in tg.model.graph.initializer if i.name == name)) \
                if any(i.name == name for i in tg.model.graph.initializer) else \
                (np.random.default_rng(2).standard_normal(w_shape) * 0.05).astype(np.float32)
    wanted = [tg.grads["w"]]
    return lambda: sess.run(wanted, feeds)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--forms", default="auto,channel_first,stacked,conv")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    forms = args.forms.split(",")
    for layer in args.layers.split(","):
        runs = {f: runner(layer, f) for f in forms}
        ref = runs[forms[0]]()
        times = {f: [] for f in forms}
        for f, run in runs.items():
            err = float(np.abs(run() - ref).max() / np.abs(ref).max())
            if err > 1e-4:
                print(f"  {layer} {f}: differs from {forms[0]} by {err:.1e}")
        for _ in range(args.rounds):
            for f, run in runs.items():
                start = time.process_time()
                for _ in range(args.steps):
                    run()
                times[f].append((time.process_time() - start) / args.steps * 1e3)
        base = statistics.median(times[forms[0]])
        cells = "  ".join(f"{f} {statistics.median(t):7.1f} ms ({statistics.median(t) / base:.2f})"
                          for f, t in times.items())
        print(f"{layer:8s} {cells}", flush=True)


if __name__ == "__main__":
    main()
