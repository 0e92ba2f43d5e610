#!/usr/bin/env python3
"""One Conv's training step (forward, MSE loss, weight gradient) per weight-gradient form, interleaved.

    python tools/bench_conv_grads.py [--layers stem,s1down,...] [--forms channel_first,stacked,conv]
                                     [--rounds 7] [--steps 5]
    python tools/bench_conv_grads.py --layers s1down,s2down,s3down --forms subpixel,transpose

The layers are ResNet-18's at 112x112, batch 16 (tools/bench_training.py --net resnet18). Each form is
`rules/conv.WEIGHT_GRAD_FORM` forced for the whole graph (or, for the input-gradient forms subpixel and
transpose, `rules/conv.SUBPIXEL`, with x scaled by a trained scalar so its gradient is computed); the graphs run on the session
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
from onnxprune.autodiff.nchwc import fill_filter  # noqa: E402
from onnxprune.autodiff.runner import fast_session  # noqa: E402

# name: (input shape, weight shape, stride, pad)
LAYERS = {
    "stem": ((16, 3, 112, 112), (64, 3, 7, 7), 2, 3),
    "s0": ((16, 64, 28, 28), (64, 64, 3, 3), 1, 1),
    "s1down": ((16, 64, 28, 28), (128, 64, 3, 3), 2, 1),
    "s1proj": ((16, 64, 28, 28), (128, 64, 1, 1), 2, 0),
    "s1": ((16, 128, 14, 14), (128, 128, 3, 3), 1, 1),
    "s2down": ((16, 128, 14, 14), (256, 128, 3, 3), 2, 1),
    "s2proj": ((16, 128, 14, 14), (256, 128, 1, 1), 2, 0),
    "s2": ((16, 256, 7, 7), (256, 256, 3, 3), 1, 1),
    "s3down": ((16, 256, 7, 7), (512, 256, 3, 3), 2, 1),
    "s3proj": ((16, 256, 7, 7), (512, 256, 1, 1), 2, 0),
    "s3": ((16, 512, 4, 4), (512, 512, 3, 3), 1, 1),
}


def one_conv(x_shape, w_shape, stride: int, pad: int, input_grad: bool = False) -> onnx.ModelProto:
    """x -> Conv -> y; with `input_grad`, x is scaled by a trained scalar first, so the step computes
    the Conv's input gradient too."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal(w_shape) * 0.05).astype(np.float32), "w")
    inits, nodes, source = [w], [], "x"
    if input_grad:
        inits.append(numpy_helper.from_array(np.ones((1, x_shape[1], 1, 1), np.float32), "scale"))
        nodes.append(helper.make_node("Mul", ["x", "scale"], ["xs"]))
        source = "xs"
    nodes.append(helper.make_node("Conv", [source, "w"], ["y"], strides=[stride] * 2, pads=[pad] * 4))
    graph = helper.make_graph(nodes, "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


INPUT_FORMS = {"subpixel": dict(SUBPIXEL=True), "transpose": dict(SUBPIXEL=False)}


def runner(layer: str, form: str):
    """The step of `layer` under weight-gradient `form`, or input-gradient form (INPUT_FORMS)."""
    x_shape, w_shape, stride, pad = LAYERS[layer]
    switches = INPUT_FORMS.get(form, dict(WEIGHT_GRAD_FORM=form))
    saved = {k: getattr(conv, k) for k in switches}
    for k, v in switches.items():
        setattr(conv, k, v)
    try:
        tg = build_training_graph(one_conv(x_shape, w_shape, stride, pad, form in INPUT_FORMS), loss="mse",
                                  input_shapes={"x": x_shape},
                                  trainable=["w", "scale"] if form in INPUT_FORMS else ["w"])
    finally:
        for k, v in saved.items():
            setattr(conv, k, v)
    source = one_conv(x_shape, w_shape, stride, pad, form in INPUT_FORMS)
    values = {i.name: numpy_helper.to_array(i) for i in source.graph.initializer}
    sess, filters = fast_session(tg.model, 1, x_shape[0], tuple(tg.trainable))
    x = np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)
    out = [(s + 2 * pad - k) // stride + 1 for s, k in zip(x_shape[2:], w_shape[2:])]
    feeds = {"x": x, tg.target: np.zeros([x_shape[0], w_shape[0]] + out, np.float32)}
    for i in sess.get_inputs():
        if i.name in values:
            feeds[i.name] = values[i.name]
    for name, spec in filters.items():  # numpy-made filters, as TrainStep fills them
        feeds[name] = np.empty(spec.shape, np.float32)
        fill_filter(spec, values[spec.weight], feeds[name])
    wanted = [tg.grads[n] for n in tg.trainable]
    return lambda: sess.run(wanted, feeds)[-1]


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
