#!/usr/bin/env python3
"""Why the recurrent backward is unrolled: the sequential part of an LSTM backward written two ways,
timed interleaved in ONNX Runtime.

    .venv/bin/python tools/bench_unroll_vs_loop.py --steps 64 --hidden 512 --batch 1,32

The recurrence (per step: dh = dy_t + (dh * k_t) R, kept for every step) is built once as an unrolled
graph (Split, then Mul/MatMul/Add per step, Concat) and once as a Loop whose body does the same per
iteration (Gather of step t, Mul, MatMul, Add; scan output). Both give the same numbers; the table gives
the median of interleaved runs and the ratio Loop / unrolled.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

F = TensorProto.FLOAT


def unrolled(steps: int, hidden: int):
    nodes = [helper.make_node("Split", ["k", "ones"], [f"k{t}" for t in range(steps)], axis=0),
             helper.make_node("Split", ["dy", "ones"], [f"dy{t}" for t in range(steps)], axis=0)]
    prev = None
    outs = []
    for t in reversed(range(steps)):
        if prev is None:
            nodes.append(helper.make_node("Identity", [f"dy{t}"], [f"h{t}"]))
        else:
            nodes += [helper.make_node("Mul", [prev, f"k{t + 1}"], [f"m{t}"]),
                      helper.make_node("MatMul", [f"m{t}", "r"], [f"p{t}"]),
                      helper.make_node("Add", [f"p{t}", f"dy{t}"], [f"h{t}"])]
        prev = f"h{t}"
        outs.append(prev)
    nodes.append(helper.make_node("Concat", outs[::-1], ["out"], axis=0))
    inits = [helper.make_tensor("ones", TensorProto.INT64, [steps], [1] * steps)]
    return _model(nodes, inits, steps, hidden)


def loop(steps: int, hidden: int):
    body = helper.make_graph(
        [helper.make_node("Sub", ["last", "i"], ["t"]),
         helper.make_node("Add", ["t", "one"], ["t1"]),
         helper.make_node("Gather", ["k", "t1"], ["kt"], axis=0),
         helper.make_node("Gather", ["dy", "t"], ["dyt"], axis=0),
         helper.make_node("Mul", ["h_in", "kt"], ["m"]),
         helper.make_node("MatMul", ["m", "r"], ["p"]),
         helper.make_node("Add", ["p", "dyt"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["h_out"], ["scan"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("h_in", F, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", F, None), helper.make_tensor_value_info("scan", F, None)])
    nodes = [helper.make_node("Gather", ["dy", "lastv"], ["h_first"], axis=0),
             helper.make_node("Loop", ["trips", "cond", "h_first"], ["h_end", "rev"], body=body),
             helper.make_node("Unsqueeze", ["h_first", "axis0"], ["h_first1"]),
             helper.make_node("Slice", ["rev", "start", "end", "axis0", "minus1"], ["tail"]),  # back to time order
             helper.make_node("Concat", ["tail", "h_first1"], ["out"], axis=0)]
    i64 = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [len(v)] if isinstance(v, list) else [], v if isinstance(v, list) else [v])  # noqa: E731
    inits = [i64("trips", steps - 1), helper.make_tensor("cond", TensorProto.BOOL, [], [True]),
             i64("last", steps - 2), i64("one", 1), i64("lastv", steps - 1), i64("start", [-1]),
             i64("end", [-steps - 1]), i64("axis0", [0]), i64("minus1", [-1])]
    return _model(nodes, inits, steps, hidden)


def _model(nodes, inits, steps, hidden):
    graph = helper.make_graph(nodes, "rec", [helper.make_tensor_value_info("k", F, [steps, None, hidden]),
                                             helper.make_tensor_value_info("dy", F, [steps, None, hidden]),
                                             helper.make_tensor_value_info("r", F, [hidden, hidden])],
                              [helper.make_tensor_value_info("out", F, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    rng = np.random.default_rng(0)
    sessions = {kind: ort.InferenceSession(build(a.steps, a.hidden).SerializeToString(), opts,
                                           providers=["CPUExecutionProvider"])
                for kind, build in (("unrolled", unrolled), ("loop", loop))}
    print(f"| T={a.steps}, H={a.hidden} | unrolled ms | Loop ms | Loop / unrolled |\n|---|---|---|---|")
    for batch in (int(b) for b in a.batch.split(",")):
        feed = {"k": rng.standard_normal((a.steps, batch, a.hidden)).astype(np.float32) * 0.1,
                "dy": rng.standard_normal((a.steps, batch, a.hidden)).astype(np.float32),
                "r": rng.standard_normal((a.hidden, a.hidden)).astype(np.float32) * 0.05}
        outs = {k: s.run(None, feed)[0] for k, s in sessions.items()}
        np.testing.assert_allclose(outs["loop"], outs["unrolled"], rtol=1e-3, atol=1e-3)
        times = {k: [] for k in sessions}
        for _ in range(a.rounds):  # interleaved, so load changes hit both alike
            for k, s in sessions.items():
                start = time.perf_counter()
                s.run(None, feed)
                times[k].append(time.perf_counter() - start)
        u, lp = (statistics.median(times[k]) * 1e3 for k in ("unrolled", "loop"))
        print(f"| batch {batch} | {u:.2f} | {lp:.2f} | {lp / u:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
