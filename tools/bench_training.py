"""Training steps per second: onnxprune in ONNX Runtime vs PyTorch CPU on the same network.

Two networks (--net):
- digits: fixtures/digits_cnn.onnx (Conv-ReLU x2, MaxPool, Conv-ReLU, GAP, Linear) at batch 64 on the
  digits calibration images, and the same architecture in PyTorch with the same weights;
- resnet18: ResNet-18's layout at 112x112 (BatchNorm folded into conv biases, as exported for
  inference), random weights and images, batch 16 (tools/train_nets.py builds both sides).

A step is forward, cross-entropy, backward and an AdamW update. The machine is shared and noisy, so
the two run interleaved (ORT, torch, ORT, torch, ...) and the median of the per-round ratios is
reported with its spread. --plain adds ORT without IOBinding (plain run(), weights passed in and
gradients copied out each step). --memory measures peak memory instead: each framework trains in a
fresh process, and the figure is its peak resident memory (ru_maxrss) minus its resident memory
before the trainer was built (after imports, model and data).

    python tools/bench_training.py [--net digits|resnet18] [--threads 1] [--rounds 15] [--steps 20]
    python tools/bench_training.py --net resnet18 --memory
    python tools/bench_training.py --net resnet18 --profile   (ORT's per-op profile, then torch.profiler's)

--widths other than the fixture's 32,64,64 builds the digits architecture with those channel counts
(random weights, same digits data).

torch==2.13.0 is a benchmark-only dependency (`pip install torch==2.13.0`, a CPU build).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxprune.autodiff import build_training_graph, read_weights  # noqa: E402
from onnxprune.autodiff.optim import AdamW, FlatParams  # noqa: E402
from onnxprune.autodiff.runner import TrainStep  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402

MODEL = ROOT / "fixtures" / "digits_cnn.onnx"
LR = 1e-3


@dataclass
class Case:
    title: str
    model: onnx.ModelProto
    torch_net: Callable          # () -> a fresh torch module with the model's weights
    order: list[str]             # ONNX weight names in the order of the module's parameters()
    x: np.ndarray
    y: np.ndarray


def digits_case(widths: tuple[int, int, int], batch: int) -> Case:
    model = onnx.load(str(MODEL)) if widths == (32, 64, 64) else digits_like(widths)
    data = np.load(ROOT / "fixtures" / "digits_calib.npz")
    x, y = np.ascontiguousarray(data["input"][:batch]), data["labels"][:batch].astype(np.int64)
    order = [t for n in model.graph.node if n.op_type in ("Conv", "Gemm") for t in n.input[1:3]]
    return Case(f"small CNN (digits_cnn architecture, convs {widths}), batch {batch}", model,
                lambda: torch_net(model), order, x, y)


def resnet_case(batch: int, size: int) -> Case:
    import train_nets
    weights = train_nets.resnet_weights()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    y = rng.integers(0, weights["fc.w"].shape[0], batch).astype(np.int64)
    return Case(f"ResNet-18 layout (BatchNorm folded), {size}x{size}, batch {batch}",
                train_nets.resnet_onnx(weights, size=size), lambda: train_nets.resnet_torch(weights),
                train_nets.onnx_param_order(weights), x, y)


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
    def __init__(self, case: Case, threads: int):
        started = time.perf_counter()
        self.tg = build_training_graph(case.model)
        self.build_ms = (time.perf_counter() - started) * 1e3
        self.params = FlatParams(read_weights(case.model, self.tg.trainable))
        self.step_fn = TrainStep(self.tg, self.params, threads)
        self.opt = AdamW(self.params, weight_decay=0.0)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss, _ = self.step_fn({"input": x}, y)
        self.opt.step(LR)
        return loss


class OrtPlainTrainer(OrtTrainer):
    """The same graph run with sess.run(): weights passed in and gradients returned every step."""

    def __init__(self, case: Case, threads: int):
        super().__init__(case, threads)
        self.sess = session(self.tg.model, threads)
        self.names = [self.tg.loss] + [self.tg.grads[n] for n in self.params.names]

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        outs = self.sess.run(self.names, {"input": x, self.tg.target: y, **self.params.values})
        for name, grad in zip(self.params.names, outs[1:]):
            self.params.grads[name][...] = grad
        self.opt.step(LR)
        return float(outs[0])


class TorchTrainer:
    def __init__(self, case: Case, threads: int):
        import torch
        torch.set_num_threads(threads or 2)
        self.torch = torch
        self.net = case.torch_net()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=LR, weight_decay=0.0)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def gradient_agreement(case: Case) -> tuple[float, float]:
    """Worst relative difference between the ONNX training graph's and torch autograd's gradients,
    per weight as max|g - ref| / max|ref| and as ||g - ref|| / ||ref||. One ReLU pre-activation within
    rounding of 0 (ResNet-18 here: 4.5e-6 of a layer whose largest is 31) takes the other side of the
    kink under a different summation order and moves the first figure to 1e-2; the second stays small."""
    import torch
    ort_side = OrtTrainer(case, 1)
    ort_side.step_fn({"input": case.x}, case.y)
    net = case.torch_net()
    torch.nn.functional.cross_entropy(net(torch.from_numpy(case.x)), torch.from_numpy(case.y)).backward()
    worst_max = worst_norm = 0.0
    for name, p in zip(case.order, net.parameters()):
        ref, got = p.grad.numpy(), ort_side.params.grads[name]
        worst_max = max(worst_max, float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12)))
        worst_norm = max(worst_norm, float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12)))
    return worst_max, worst_norm


def timed(trainer, x, y, steps: int) -> tuple[float, float]:
    """Steps per second of wall-clock time and of this process's CPU time (robust to other load)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.step(x, y)
    return steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(case: Case, framework: str, threads: int, steps: int) -> None:
    """Train `steps` steps in this (fresh) process; print the peak memory the training added."""
    if framework == "torch":
        import torch  # noqa: F401  (imported before the baseline: the library is not training memory)
    else:
        import onnxruntime  # noqa: F401
    before = _rss_mb()
    trainer = (TorchTrainer if framework == "torch" else OrtTrainer)(case, threads)
    for _ in range(steps):
        loss = trainer.step(case.x, case.y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_mb": before, "peak_mb": peak, "loss": loss}))


def memory(args, case: Case) -> None:
    results = {}
    for framework in ("ort", "torch"):
        cmd = [sys.executable, __file__, "--net", args.net, "--batch", str(args.batch), "--size", str(args.size),
               "--widths", args.widths, "--threads", str(args.threads), "--steps", str(min(args.steps, 5)),
               "--child", framework]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[framework] = json.loads(out.strip().splitlines()[-1])
    print(f"{case.title}, AdamW, {args.threads} thread(s): peak memory of training, fresh process each")
    for name, r in results.items():
        print(f"  {name:6s} peak {r['peak_mb']:7.0f} MB, before training {r['before_mb']:6.0f} MB, "
              f"training added {r['peak_mb'] - r['before_mb']:6.0f} MB")
    ort_add, torch_add = (results[k]["peak_mb"] - results[k]["before_mb"] for k in ("ort", "torch"))
    print(f"  ORT / PyTorch (memory training added): {ort_add / torch_add:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=("digits", "resnet18"), default="digits")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both (default 1)")
    parser.add_argument("--widths", default="32,64,64", help="digits: channels of the three convs")
    parser.add_argument("--batch", type=int, help="default 64 (digits), 16 (resnet18)")
    parser.add_argument("--size", type=int, default=112, help="resnet18: image side")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, help="steps per round (default 20 digits, 2 resnet18)")
    parser.add_argument("--plain", action="store_true", help="also time ORT without IOBinding")
    parser.add_argument("--memory", action="store_true", help="peak memory instead of speed")
    parser.add_argument("--profile", action="store_true",
                        help="ORT's per-op profile of the training step instead (tools/profile_training.py)")
    parser.add_argument("--child", choices=("ort", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batch = args.batch or (64 if args.net == "digits" else 16)
    args.steps = args.steps or (20 if args.net == "digits" else 2)
    widths = tuple(int(w) for w in args.widths.split(","))
    case = digits_case(widths, args.batch) if args.net == "digits" else resnet_case(args.batch, args.size)
    if args.child:
        return memory_child(case, args.child, args.threads, args.steps)
    if args.memory:
        return memory(args, case)
    if args.profile:
        import profile_training
        return profile_training.profile_case(case, steps=3, top=30, by_shape=True, with_torch=True)

    import torch
    trainers = {"onnxprune/ORT (IOBinding)": OrtTrainer(case, args.threads)}
    if args.plain:
        trainers["onnxprune/ORT (plain run)"] = OrtPlainTrainer(case, args.threads)
    trainers[f"PyTorch {torch.__version__}"] = TorchTrainer(case, args.threads)
    for t in trainers.values():  # warm-up
        timed(t, case.x, case.y, max(2, args.steps // 4))
    rates = {k: [] for k in trainers}
    for _ in range(args.rounds):
        for name, t in trainers.items():
            rates[name].append(timed(t, case.x, case.y, args.steps))
    base, torch_name = list(trainers)[0], list(trainers)[-1]
    print(f"{case.title}, AdamW, {args.threads} thread(s), {args.rounds} interleaved rounds of {args.steps} steps")
    print(f"  {'':28s} {'wall steps/s':>13s} {'CPU steps/s':>12s}   (medians)")
    for name in trainers:
        wall = statistics.median(r[0] for r in rates[name])
        cpu = statistics.median(r[1] for r in rates[name])
        print(f"  {name:28s} {wall:13.2f} {cpu:12.2f}")
    for i, kind in enumerate(("wall", "CPU")):
        ratios = sorted(a[i] / b[i] for a, b in zip(rates[base], rates[torch_name]))
        quart = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(f"  ORT / PyTorch ({kind}): {statistics.median(ratios):.2f}x (median of per-round ratios; "
              f"quartiles {quart[0]:.2f}-{quart[2]:.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f})")
    print(f"  training graph built in {trainers[base].build_ms:.1f} ms")
    worst_max, worst_norm = gradient_agreement(case)
    print(f"  gradients vs torch autograd, worst weight: max-abs {worst_max:.1e}, L2 {worst_norm:.1e} (relative)")


if __name__ == "__main__":
    main()
