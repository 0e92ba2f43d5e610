"""Training steps per second on a small CNN at batch 64: onnxprune in ONNX Runtime vs PyTorch CPU.

The network is fixtures/digits_cnn.onnx (Conv-ReLU x2, MaxPool, Conv-ReLU, GAP, Linear) and the same
architecture in PyTorch, loaded with the same weights. A step is forward, backward and an AdamW
update, on the same 64 images of the digits calibration set. The machine is shared and noisy, so
the two run interleaved (ORT, torch, ORT, torch, ...) and the median of the per-round ratios is
reported. Also printed: ORT without IOBinding (plain run() with weight copies), and how far the
first step's gradients are from torch autograd.

    python tools/bench_training.py [--threads 1] [--widths 32,64,64] [--rounds 15] [--steps 20]

--widths other than the fixture's 32,64,64 builds the same architecture with those channel counts
(random weights, same digits data).

torch==2.13.0 is a benchmark-only dependency (`pip install torch==2.13.0`, a CPU build).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune.autodiff import build_training_graph, read_weights  # noqa: E402
from onnxprune.autodiff.optim import AdamW, FlatParams  # noqa: E402
from onnxprune.autodiff.runner import TrainStep  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402

MODEL = ROOT / "fixtures" / "digits_cnn.onnx"
BATCH = 64
LR = 1e-3


def digits_like(widths: tuple[int, int, int], seed: int = 0) -> onnx.ModelProto:
    """The digits CNN's architecture with other channel counts, as an ONNX model."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    c1, c2, c3 = widths
    shapes = {"w1": (c1, 1, 3, 3), "b1": (c1,), "w2": (c2, c1, 3, 3), "b2": (c2,), "w3": (c3, c2, 3, 3), "b3": (c3,),
              "fw": (10, c3), "fb": (10,)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * (2.0 / np.prod(s[1:])) ** 0.5).astype(np.float32), k)
             for k, s in shapes.items()]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], **conv), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **conv), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w3", "b3"], ["c3"], **conv), helper.make_node("Relu", ["c3"], ["r3"]),
             helper.make_node("GlobalAveragePool", ["r3"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["output"], transB=1)]
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])
    graph = helper.make_graph(nodes, "cnn", [image],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def torch_net(model: onnx.ModelProto):
    """The digits CNN in PyTorch, with the ONNX model's weights (BatchNorm is folded in the export)."""
    import torch
    from torch import nn

    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    w = read_weights(model, [t for n in convs + [gemm] for t in n.input[1:3]])
    layers = []
    for i, node in enumerate(convs):
        weight = w[node.input[1]]
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], padding=1)
        conv.weight.data = torch.from_numpy(weight.copy())
        conv.bias.data = torch.from_numpy(w[node.input[2]].copy())
        layers += [conv, nn.ReLU()]
        if i == 1:
            layers.append(nn.MaxPool2d(2))
    fc = nn.Linear(*w[gemm.input[1]].shape[::-1])
    fc.weight.data = torch.from_numpy(w[gemm.input[1]].copy())
    fc.bias.data = torch.from_numpy(w[gemm.input[2]].copy())
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc]
    return nn.Sequential(*layers)


class OrtTrainer:
    def __init__(self, model: onnx.ModelProto, threads: int):
        started = time.perf_counter()
        self.tg = build_training_graph(model)
        self.build_ms = (time.perf_counter() - started) * 1e3
        self.params = FlatParams(read_weights(model, self.tg.trainable))
        self.step_fn = TrainStep(self.tg, self.params, threads)
        self.opt = AdamW(self.params, weight_decay=0.0)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss, _ = self.step_fn({"input": x}, y)
        self.opt.step(LR)
        return loss


class OrtPlainTrainer(OrtTrainer):
    """The same graph run with sess.run(): weights passed in and gradients returned every step."""

    def __init__(self, model: onnx.ModelProto, threads: int):
        super().__init__(model, threads)
        self.sess = session(self.tg.model, threads)
        self.names = [self.tg.loss] + [self.tg.grads[n] for n in self.params.names]

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        outs = self.sess.run(self.names, {"input": x, self.tg.target: y, **self.params.values})
        for name, grad in zip(self.params.names, outs[1:]):
            self.params.grads[name][...] = grad
        self.opt.step(LR)
        return float(outs[0])


class TorchTrainer:
    def __init__(self, model: onnx.ModelProto, threads: int):
        import torch
        torch.set_num_threads(threads or 2)
        self.torch = torch
        self.net = torch_net(model)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=LR, weight_decay=0.0)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def gradient_agreement(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    """Worst relative difference between the ONNX training graph's and torch autograd's gradients."""
    import torch
    ort_side = OrtTrainer(model, 1)
    ort_side.step_fn({"input": x}, y)
    net = torch_net(model)
    torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    torch_grads = [p.grad.numpy() for p in net.parameters()]  # conv1 w,b, conv2 w,b, conv3 w,b, fc w,b
    order = [t for n in model.graph.node if n.op_type in ("Conv", "Gemm") for t in n.input[1:3]]
    worst = 0.0
    for name, ref in zip(order, torch_grads):
        got = ort_side.params.grads[name]
        worst = max(worst, float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12)))
    return worst


def timed(trainer, x, y, steps: int) -> tuple[float, float]:
    """Steps per second of wall-clock time and of this process's CPU time (robust to other load)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.step(x, y)
    return steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both (default 1)")
    parser.add_argument("--widths", default="32,64,64", help="channels of the three convs (default: the fixture's)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    args = parser.parse_args()

    import torch
    widths = tuple(int(w) for w in args.widths.split(","))
    model = onnx.load(str(MODEL)) if widths == (32, 64, 64) else digits_like(widths)
    data = np.load(ROOT / "fixtures" / "digits_calib.npz")
    x, y = np.ascontiguousarray(data["input"][:BATCH]), data["labels"][:BATCH].astype(np.int64)

    trainers = {"onnxprune/ORT (IOBinding)": OrtTrainer(model, args.threads),
                "onnxprune/ORT (plain run)": OrtPlainTrainer(model, args.threads),
                f"PyTorch {torch.__version__}": TorchTrainer(model, args.threads)}
    for t in trainers.values():  # warm-up
        timed(t, x, y, 5)
    rates = {k: [] for k in trainers}
    for _ in range(args.rounds):
        for name, t in trainers.items():
            rates[name].append(timed(t, x, y, args.steps))
    base = list(trainers)[0]
    torch_name = list(trainers)[-1]
    print(f"small CNN (digits_cnn architecture, convs {widths}), batch {BATCH}, AdamW, {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds of {args.steps} steps")
    print(f"  {'':28s} {'wall steps/s':>13s} {'CPU steps/s':>12s}   (medians)")
    for name in trainers:
        wall = statistics.median(r[0] for r in rates[name])
        cpu = statistics.median(r[1] for r in rates[name])
        print(f"  {name:28s} {wall:13.1f} {cpu:12.1f}")
    for i, kind in enumerate(("wall", "CPU")):
        ratios = [a[i] / b[i] for a, b in zip(rates[base], rates[torch_name])]
        print(f"  ORT / PyTorch ({kind}): {statistics.median(ratios):.2f}x (median of per-round ratios)")
    print(f"  training graph built in {trainers[base].build_ms:.1f} ms")
    print(f"  gradients vs torch autograd: worst relative difference {gradient_agreement(model, x, y):.1e}")


if __name__ == "__main__":
    main()
