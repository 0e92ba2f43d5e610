"""LRN written as a band Conv, so that channel pruning can shrink it: the rewrite `--target-latency` makes.

LRN normalizes each channel by the squares of its neighbours,

    y = x / (bias + alpha/size * sum_{c' in window(c)} x_c'^2) ^ beta,

with the window taken by position, so removing a channel would shift its neighbours' windows: the
pruner freezes LRN's channels (couple/ops/misc.py), and with them the convolution before it. On
ONNX Runtime's CPU provider LRN is also a slow kernel (Inception-v1: 40% of the dense time at two
threads, tools/bench_lrn.py). Written as

    s = Conv(x * x, W, b)      W[c, c'] = alpha/size inside the window, 0 outside; b[c] = bias
    y = x / s^beta             (beta 0.75: x / (sqrt(s) * sqrt(sqrt(s))), else x * Pow(s, -beta))

the same function (to float rounding) is a 1x1 Conv whose input and output channels are x's own:
a pruned channel is a row and a column of W sliced away, exactly what keeping it at zero in the dense
model computes. It runs several times faster than ORT's LRN at Inception's shapes, and it shrinks as
the channels do, so a latency target can spend its time where the MACs are.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.graph.model_graph import ModelGraph

SQRT_BETA = 0.75  # s^-0.75 as 1/(sqrt(s) * sqrt(sqrt(s))): two Sqrts are faster than Pow and as exact
FLOATS = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.FLOAT16: np.float16}


def band_weight(channels: int, size: int, alpha: float, spatial: int, dtype=np.float32) -> np.ndarray:
    """The C x C x 1.. Conv weight summing each channel's LRN window (ONNX's window: floor((size-1)/2)
    channels before, ceil((size-1)/2) after), scaled by alpha/size."""
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    offset = np.arange(channels)[None, :] - np.arange(channels)[:, None]  # c' - c
    band = ((offset >= -before) & (offset <= after)) * (alpha / size)
    return band.astype(dtype).reshape((channels, channels) + (1,) * spatial)


def lrn_as_band(model: onnx.ModelProto, input_shapes=None) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with every LRN of known channel count and float type written as a band Conv
    (main graph only), and how many were rewritten; the model itself when there is none."""
    if not any(n.op_type == "LRN" for n in model.graph.node):  # no shape inference for the usual model
        return model, 0
    graph = ModelGraph(model, input_shapes)
    sites = [n for n in graph.nodes if n.op == "LRN" and n.proto.domain in ("", "ai.onnx") and _rewritable(graph, n)]
    if not sites:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = set(graph.constants) | set(graph.producer) | {n.name for n in graph.nodes}
    replaced = {}
    for node in sites:
        replaced[node.index] = _band_nodes(graph, node, out.graph.initializer, _Namer(node.name or node.outputs[0], names))
    nodes = [new for i, proto in enumerate(out.graph.node) for new in replaced.get(i, [proto])]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    if out.ir_version < 4:  # IR 3 lists every initializer among the graph inputs
        listed = {i.name for i in out.graph.input}
        out.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                               for t in out.graph.initializer if t.name not in listed)
    return out, len(sites)


def _rewritable(graph: ModelGraph, node) -> bool:
    shape = graph.shape(node.inputs[0])
    return (shape is not None and len(shape) >= 3 and isinstance(shape[1], int) and shape[1] > 0
            and graph.dtypes.get(node.inputs[0]) in FLOATS)


class _Namer:
    """Fresh tensor and node names under the LRN's own name (so profiles charge them to it by prefix)."""

    def __init__(self, base: str, taken: set[str]):
        self.base, self.taken = base, taken

    def __call__(self, part: str) -> str:
        name, k = f"{self.base}/band/{part}", 0
        while name in self.taken:
            k += 1
            name = f"{self.base}/band/{part}_{k}"
        self.taken.add(name)
        return name


def _band_nodes(graph: ModelGraph, node, initializers, fresh: _Namer) -> list[onnx.NodeProto]:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.proto.attribute}
    size, alpha = int(attrs["size"]), float(attrs.get("alpha", 1e-4))
    beta, bias = float(attrs.get("beta", 0.75)), float(attrs.get("bias", 1.0))
    x, y = node.inputs[0], node.outputs[0]
    shape, dtype = graph.shape(x), FLOATS[graph.dtypes[x]]
    weight, offset = fresh("weight"), fresh("bias")
    initializers.extend([numpy_helper.from_array(band_weight(shape[1], size, alpha, len(shape) - 2, dtype), weight),
                         numpy_helper.from_array(np.full(shape[1], bias, dtype), offset)])
    square, total = fresh("square"), fresh("sum")
    nodes = [helper.make_node("Mul", [x, x], [square], name=fresh("Mul")),
             helper.make_node("Conv", [square, weight, offset], [total], name=fresh("Conv"))]
    if abs(beta - SQRT_BETA) < 1e-12:
        root2, root4, scale = fresh("sqrt"), fresh("sqrt_sqrt"), fresh("scale")
        nodes += [helper.make_node("Sqrt", [total], [root2], name=fresh("Sqrt")),
                  helper.make_node("Sqrt", [root2], [root4], name=fresh("Sqrt")),
                  helper.make_node("Mul", [root2, root4], [scale], name=fresh("Mul")),
                  helper.make_node("Div", [x, scale], [y], name=fresh("Div"))]
    else:
        power, scale = fresh("power"), fresh("scale")
        initializers.append(numpy_helper.from_array(np.array(-beta, dtype), power))
        nodes += [helper.make_node("Pow", [total, power], [scale], name=fresh("Pow")),
                  helper.make_node("Mul", [x, scale], [y], name=fresh("Mul"))]
    return nodes
