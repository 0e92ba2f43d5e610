#!/usr/bin/env python3
"""ONNX Runtime's LRN kernel against exact decompositions of it, at a model's own LRN shapes.

    python tools/bench_lrn.py light_inception_v1 --threads 1 --clock cpu

Channel pruning leaves LRN whole (its sum of squares runs over neighbouring channels, so its
channels are frozen): on Inception-v1 it is a fixed cost no allocation can prune. This times, per
LRN of the model, ORT's LRN against the same formula written with plain ops,
    y = x / (bias + alpha/size * window_sum(x^2))^beta,
- "slices": window_sum as `size` channel slices of the zero-padded squares added up (no cancellation);
- "cumsum": window_sum as the difference of two slices of a cumulative sum (fewer kernels, but it
  subtracts large partial sums: not safe for inputs whose squares vary by many orders of magnitude);
- "band": window_sum as a 1x1 Conv of the squares whose C x C weight is the window's band (alpha/size
  inside it, the bias as the Conv's bias): the form select/lrn_band.py rewrites LRN to, which channel
  pruning can slice (a removed channel is a zero in every window, exactly);
with ^-0.75 as 1/(sqrt(s) * sqrt(sqrt(s))) when beta is 0.75 (Pow otherwise). Prints the fastest of
--runs runs of each and the largest relative difference from ORT's LRN output on random inputs.
Figures move with the machine's load: print the load next to them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from bench_target_latency import make_session  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402
from onnxprune.load import zoo  # noqa: E402


def _ints(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def lrn_alone(shape, attrs: dict) -> onnx.ModelProto:
    node = helper.make_node("LRN", ["x"], ["y"], **attrs)
    return _model([node], shape, [])


def decomposed(shape, attrs: dict, window: str) -> onnx.ModelProto:
    size, channels = int(attrs["size"]), shape[1]
    pre, post = (size - 1) // 2, size - 1 - (size - 1) // 2
    scale = numpy_helper.from_array(np.array(attrs.get("alpha", 1e-4) / size, np.float32), "scale")
    bias = numpy_helper.from_array(np.array(attrs.get("bias", 1.0), np.float32), "bias")
    nodes, inits = [helper.make_node("Mul", ["x", "x"], ["sq"])], [scale, bias, _ints("axis", [1])]
    if window == "slices":
        inits.append(_ints("pads", [0, pre, 0, 0, 0, post, 0, 0]))
        nodes.append(helper.make_node("Pad", ["sq", "pads"], ["padded"]))
        total = None
        for k in range(size):
            inits += [_ints(f"start{k}", [k]), _ints(f"end{k}", [k + channels])]
            nodes.append(helper.make_node("Slice", ["padded", f"start{k}", f"end{k}", "axis"], [f"part{k}"]))
            if total is not None:
                nodes.append(helper.make_node("Add", [total, f"part{k}"], [f"sum{k}"]))
            total = f"part{k}" if total is None else f"sum{k}"
    elif window == "band":  # a 1x1 Conv whose weight is the window's band (what onnxprune's LRN rewrite makes)
        band = np.array([[1.0 if -pre <= j - i <= post else 0.0 for j in range(channels)] for i in range(channels)])
        weight = (band * attrs.get("alpha", 1e-4) / size).astype(np.float32)[:, :, None, None]
        inits += [numpy_helper.from_array(weight, "band"),
                  numpy_helper.from_array(np.full(channels, attrs.get("bias", 1.0), np.float32), "band_bias")]
        nodes.append(helper.make_node("Conv", ["sq", "band", "band_bias"], ["s"]))
        total = None
    else:
        inits += [_ints("pads", [0, pre + 1, 0, 0, 0, post, 0, 0]), _ints("scalar_axis", 1), _ints("hi0", [size]),
                  _ints("hi1", [size + channels]), _ints("lo0", [0]), _ints("lo1", [channels])]
        nodes += [helper.make_node("Pad", ["sq", "pads"], ["padded"]),
                  helper.make_node("CumSum", ["padded", "scalar_axis"], ["running"]),
                  helper.make_node("Slice", ["running", "hi0", "hi1", "axis"], ["hi"]),
                  helper.make_node("Slice", ["running", "lo0", "lo1", "axis"], ["lo"]),
                  helper.make_node("Sub", ["hi", "lo"], ["window"])]
        total = "window"
    if total is not None:
        nodes += [helper.make_node("Mul", [total, "scale"], ["scaled"]), helper.make_node("Add", ["scaled", "bias"], ["s"])]
    if abs(attrs.get("beta", 0.75) - 0.75) < 1e-9:
        nodes += [helper.make_node("Sqrt", ["s"], ["r2"]), helper.make_node("Sqrt", ["r2"], ["r4"]),
                  helper.make_node("Mul", ["r2", "r4"], ["d"]), helper.make_node("Div", ["x", "d"], ["y"])]
    else:
        inits.append(numpy_helper.from_array(np.array(-attrs["beta"], np.float32), "power"))
        nodes += [helper.make_node("Pow", ["s", "power"], ["d"]), helper.make_node("Mul", ["x", "d"], ["y"])]
    return _model(nodes, shape, inits)


def _model(nodes, shape, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def fastest(sess, feed: dict, runs: int, clock) -> float:
    sess.run(None, feed)
    best = float("inf")
    for _ in range(runs):
        start = clock()
        sess.run(None, feed)
        best = min(best, clock() - start)
    return best * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="light_inception_v1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    args = ap.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    model = onnx.load(zoo.fetch(args.model) if not os.path.exists(args.model) else args.model)
    graph = ModelGraph(model)
    print(f"{args.model}: LRN against exact decompositions, {args.threads} threads, {args.clock} clock, "
          f"fastest of {args.runs}, load {os.getloadavg()[0]:.1f}\n")
    print("| LRN | input | ORT LRN ms | slices ms (max rel. diff) | cumsum ms (max rel. diff) | band ms (max rel. diff) |")
    print("|---|---|---|---|---|---|")
    for node in (n for n in model.graph.node if n.op_type == "LRN"):
        shape = graph.shape(node.input[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        feed = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 10}
        reference = make_session(lrn_alone(shape, attrs), args.threads)
        expected = reference.run(None, feed)[0]
        cells = [f"{fastest(reference, feed, args.runs, clock):.2f}"]
        for window in ("slices", "cumsum", "band"):
            sess = make_session(decomposed(shape, attrs, window), args.threads)
            diff = float(np.max(np.abs(sess.run(None, feed)[0] - expected) / (np.abs(expected) + 1e-6)))
            cells.append(f"{fastest(sess, feed, args.runs, clock):.2f} ({diff:.1e})")
        print(f"| {node.name} | {'x'.join(map(str, shape))} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
