"""Networks for tools/bench_training.py, built twice from one set of numpy weights: as an ONNX graph
and as a PyTorch module, so both frameworks train exactly the same network.

resnet(): ResNet-18's layout (7x7/2 stem, 3x3/2 MaxPool, BasicBlocks [2, 2, 2, 2] at 64-512 channels,
1x1/2 projection shortcuts, global average pool, Linear) with BatchNorm folded into conv biases, the
form an inference export has (onnxprune trains BatchNorm as the affine map it is at inference).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET18_WIDTHS = (64, 128, 256, 512)


def _resnet_layout(widths, blocks):
    """(name, in, out, kernel, stride) per conv, and the block structure as (conv names, shortcut)."""
    convs = [("stem", 3, widths[0], 7, 2)]
    structure = []
    channels = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        for b in range(count):
            stride = 2 if stage > 0 and b == 0 else 1
            p = f"s{stage}b{b}"
            convs += [(p + "c1", channels, width, 3, stride), (p + "c2", width, width, 3, 1)]
            shortcut = None
            if stride != 1 or channels != width:
                shortcut = p + "down"
                convs.append((shortcut, channels, width, 1, stride))
            structure.append((p + "c1", p + "c2", shortcut))
            channels = width
    return convs, structure, channels


def resnet_weights(widths=RESNET18_WIDTHS, blocks=RESNET18_BLOCKS, classes: int = 10,
                   seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    convs, _, last = _resnet_layout(widths, blocks)
    w = {}
    for name, cin, cout, k, _ in convs:
        scale = (2.0 / (cin * k * k)) ** 0.5 * (0.5 if name.endswith("c2") else 1.0)  # tame residual growth
        w[name + ".w"] = (rng.standard_normal((cout, cin, k, k)) * scale).astype(np.float32)
        w[name + ".b"] = (rng.standard_normal(cout) * 0.01).astype(np.float32)
    w["fc.w"] = (rng.standard_normal((classes, last)) * (1.0 / last) ** 0.5).astype(np.float32)
    w["fc.b"] = np.zeros(classes, np.float32)
    return w


def resnet_onnx(weights: dict[str, np.ndarray], widths=RESNET18_WIDTHS, blocks=RESNET18_BLOCKS,
                size: int = 112) -> onnx.ModelProto:
    convs, structure, _ = _resnet_layout(widths, blocks)
    geo = {name: (k, s) for name, _, _, k, s in convs}
    nodes = []

    def conv(name, x, relu):
        k, s = geo[name]
        nodes.append(helper.make_node("Conv", [x, name + ".w", name + ".b"], [name], kernel_shape=[k, k],
                                      strides=[s, s], pads=[k // 2] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [name], [name + ".r"]))
            return name + ".r"
        return name

    x = conv("stem", "input", True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x = "pool"
    for c1, c2, shortcut in structure:
        h = conv(c2, conv(c1, x, True), False)
        skip = conv(shortcut, x, False) if shortcut else x
        nodes.append(helper.make_node("Add", [h, skip], [c2 + ".sum"]))
        nodes.append(helper.make_node("Relu", [c2 + ".sum"], [c2 + ".out"]))
        x = c2 + ".out"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["output"], transB=1)]
    classes = weights["fc.w"].shape[0]
    graph = helper.make_graph(
        nodes, "resnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def resnet_torch(weights: dict[str, np.ndarray], widths=RESNET18_WIDTHS, blocks=RESNET18_BLOCKS):
    """The same network as a torch.nn.Module (torch is imported here only: a benchmark dependency)."""
    import torch
    from torch import nn

    convs, structure, _ = _resnet_layout(widths, blocks)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleDict()
            for name, cin, cout, k, s in convs:
                layer = nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)
                layer.weight.data = torch.from_numpy(weights[name + ".w"].copy())
                layer.bias.data = torch.from_numpy(weights[name + ".b"].copy())
                self.convs[name] = layer
            self.fc = nn.Linear(*weights["fc.w"].shape[::-1])
            self.fc.weight.data = torch.from_numpy(weights["fc.w"].copy())
            self.fc.bias.data = torch.from_numpy(weights["fc.b"].copy())
            self.pool = nn.MaxPool2d(3, 2, 1)

        def forward(self, x):
            c = self.convs
            x = self.pool(torch.relu(c["stem"](x)))
            for c1, c2, shortcut in structure:
                h = c[c2](torch.relu(c[c1](x)))
                x = torch.relu(h + (c[shortcut](x) if shortcut else x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return Net()


def onnx_param_order(weights: dict[str, np.ndarray]) -> list[str]:
    """ONNX weight names in the order of the torch module's parameters()."""
    convs = [k[:-2] for k in weights if k.endswith(".w") and k != "fc.w"]
    return [n for c in convs for n in (c + ".w", c + ".b")] + ["fc.w", "fc.b"]
