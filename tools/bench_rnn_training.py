#!/usr/bin/env python3
"""Cost of a training step through recurrent layers: the training graph of a model with LSTM/GRU
(default: ddddocr common, CNN + bidirectional LSTM of 512) against its forward pass, in ONNX Runtime.

    .venv/bin/python tools/bench_rnn_training.py --model ddddocr_common --shape input1:1x1x64x256 --steps 5

Prints the build time, the node count of the training graph, frozen weights, and the median wall time
of a forward pass and of a training step (loss + every weight gradient) at the given batch.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.autodiff import build_training_graph, read_weights
from onnxprune.load import zoo


def timed(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ddddocr_common")
    ap.add_argument("--shape", default="input1:1x1x64x256", help="NAME:DxDxD of the (only) input")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    name, dims = a.shape.split(":")
    shape = tuple(int(d) for d in dims.split("x"))
    path = str(zoo.fetch(a.model)) if not a.model.endswith(".onnx") else a.model
    model = onnx.load(path)
    start = time.perf_counter()
    tg = build_training_graph(model, loss="mse", input_shapes={name: shape})
    build_s = time.perf_counter() - start
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    fwd = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    y = fwd.run(None, {name: x})[0]
    train = ort.InferenceSession(tg.model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {name: x, **read_weights(model, tg.trainable), tg.target: np.zeros_like(y)}
    wanted = [tg.loss] + [tg.grads[w] for w in tg.trainable]
    f = timed(lambda: fwd.run(None, {name: x}), a.steps)
    t = timed(lambda: train.run(wanted, feeds), a.steps)
    ops = {}
    for n in tg.model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"{a.model} {shape}: build {build_s:.1f} s, training graph {len(tg.model.graph.node)} nodes "
          f"(forward {len(model.graph.node)}), {len(tg.trainable)} weights trained, {len(tg.frozen)} frozen")
    print(f"forward {f * 1e3:.0f} ms, training step {t * 1e3:.0f} ms ({t / f:.1f}x), {a.threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
