"""Lower lifted weights back to QDQ after pruning and recovery (the inverse of load/qdq_lift.py).

Each lifted weight still in the model is re-quantized with its own scheme on its kept channels: the
original per-channel scale where the (re-solved) values fit the integer range, grown where they do not.
An int32 bias keeps ONNX Runtime's invariant bias scale = input scale x weight scale (its QDQ ->
QLinearConv fusion assumes it): where a weight's channel scale grew, the bias's grows by the same
factor. The graph keeps the node kinds, counts and dtypes it had, so ONNX Runtime fuses it as before:
a zero bias that recovery added and never used is dropped, a used one is quantized like the others.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.load.constants import constant_value
from onnxprune.load.qdq_params import QuantParams, quantize

log = logging.getLogger("onnxprune.qdq")
Kept = Callable[[str, int], "np.ndarray | None"]  # (tensor, axis) -> kept indices, None: all
_WEIGHTED = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2)}  # op -> (weight input, bias input)


def lower(model: onnx.ModelProto, lifted: dict[str, QuantParams], kept: Kept) -> onnx.ModelProto:
    """`model` (edited in place and returned) with every lifted weight it still holds as integers
    behind a DequantizeLinear again."""
    if not lifted:
        return model
    inits = {t.name: t for t in model.graph.initializer}
    biases = _bias_links(model, lifted)  # bias -> (its weight, the input's scale)
    scales: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # weight -> (scale before, scale after), kept channels
    nodes = []
    for name in sorted(lifted, key=lambda n: n in biases):  # weights before the biases that follow them
        if name not in inits:
            continue  # pruned away whole, or folded out
        qp = lifted[name]
        value = constant_value(inits[name])
        index = kept(name, qp.axis) if qp.axis is not None else None
        scale, zero = qp.channels(index)
        if name in biases:
            scale = _bias_scale(scale, scales.get(biases[name][0]), biases[name][1])
        q, new_scale = quantize(value, scale, zero, qp.axis, qp.dtype, qp.full_range, qp.reduced)
        scales[name] = (scale, new_scale)
        inputs = _replace(model, inits[name], [(qp.int_name, q), (qp.scale_name, new_scale)]
                          + ([(qp.zero_name, zero)] if qp.zero_name else []))
        nodes.append(onnx.helper.make_node("DequantizeLinear", inputs, [name],
                                           name=qp.node_name or None, domain=qp.domain or None))
        nodes[-1].attribute.extend(qp.attributes)
    for i, node in enumerate(nodes):  # their inputs are initializers: first in topological order
        model.graph.node.insert(i, node)
    weights = [pair for name, pair in scales.items() if name not in biases]
    grown = sum(int(np.sum(np.asarray(after) != np.asarray(before))) for before, after in weights)
    log.info("QDQ: %d weights and %d biases re-quantized; %d of %d weight scales grown to fit re-solved values",
             len(weights), len(scales) - len(weights), grown, sum(np.size(after) for _, after in weights))
    _added_biases(model, lifted, scales)
    return model


def _bias_links(model: onnx.ModelProto, lifted: dict[str, QuantParams]) -> dict[str, tuple[str, np.ndarray | None]]:
    """Each lifted bias of a Conv/Gemm whose weight is lifted too: its weight, and the scale of the
    node's quantized input when an activation DequantizeLinear with a constant scale feeds it."""
    scale_of = _activation_scales(model)
    links = {}
    for node in model.graph.node:
        w, b = _WEIGHTED.get(node.op_type, (None, None))
        if w is None or len(node.input) <= b or node.input[b] not in lifted or node.input[w] not in lifted:
            continue
        links[node.input[b]] = (node.input[w], scale_of.get(node.input[0]))
    return links


def _activation_scales(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """DequantizeLinear outputs that remain (activations) -> their scale, when it is an initializer."""
    inits = {t.name: t for t in model.graph.initializer}
    return {n.output[0]: constant_value(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and len(n.input) > 1 and n.input[1] in inits}


def _bias_scale(scale: np.ndarray, weight: tuple[np.ndarray, np.ndarray] | None,
                input_scale: np.ndarray | None) -> np.ndarray:
    """The bias scale after its weight's scale changed from weight[0] to weight[1]: input scale x new
    weight scale when the original held exactly that (ORT's layout), else the same factor applied."""
    if weight is None:
        return scale
    before, after = weight
    if np.array_equal(before, after):
        return scale
    if input_scale is not None and input_scale.size == 1:
        product = (input_scale.astype(scale.dtype).reshape(()) * before).astype(scale.dtype)
        if product.shape == scale.shape and np.array_equal(product, scale):
            return (input_scale.astype(scale.dtype).reshape(()) * after).astype(scale.dtype)
    ratio = (after.astype(np.float64) / before.astype(np.float64))
    if ratio.shape != np.shape(scale):  # one bias scale for channels that grew apart: the largest factor
        ratio = np.full(np.shape(scale), ratio.max())
    return (scale * ratio).astype(scale.dtype)


def _added_biases(model: onnx.ModelProto, lifted: dict[str, QuantParams],
                  scales: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Float biases recovery added to a quantized Conv/Gemm (recover/reconstruction.py): dropped where
    still zero, so the graph is the input's; a used one is quantized to int32 at input x weight scale."""
    inits = {t.name: t for t in model.graph.initializer}
    scale_of = _activation_scales(model)
    readers: dict[str, int] = {}
    kinds: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
            kinds.setdefault(name, set()).add(node.op_type)
    for node in list(model.graph.node):
        w, b = _WEIGHTED.get(node.op_type, (None, None))
        if w is None or len(node.input) <= b or node.input[w] not in scales or node.input[b] not in inits:
            continue
        bias, tensor = node.input[b], inits[node.input[b]]
        if tensor.data_type != onnx.TensorProto.FLOAT or readers.get(bias, 0) != 1:
            continue
        value = constant_value(tensor)
        if not value.any():
            del node.input[b:]  # the bias was optional and is the last input of Conv and Gemm
            model.graph.initializer.remove(tensor)
            continue
        x_scale = scale_of.get(node.input[0])
        if x_scale is None or x_scale.size != 1 or kinds.get(node.output[0]) != {"QuantizeLinear"}:
            continue  # a float input or output: ORT runs this node in float, a float bias is what it reads
        w_scale = scales[node.input[w]][1]
        b_scale = (x_scale.astype(np.float32).reshape(()) * w_scale.astype(np.float32)).astype(np.float32)
        axis = 0 if b_scale.ndim == 1 and b_scale.size > 1 else None
        zero = np.zeros(b_scale.shape, np.int32)
        q, b_scale = quantize(value, b_scale, zero, axis, np.dtype(np.int32))
        inputs = _replace(model, tensor, [(f"{bias}_quantized", q), (f"{bias}_quantized_scale", b_scale),
                                          (f"{bias}_quantized_zero_point", zero)])
        dq = onnx.helper.make_node("DequantizeLinear", inputs, [bias],
                                   name=f"{bias}_DequantizeLinear", **({"axis": 0} if axis is not None else {}))
        model.graph.node.insert(0, dq)


def _replace(model: onnx.ModelProto, tensor: onnx.TensorProto, new: list[tuple[str, np.ndarray]]) -> list[str]:
    """Swap one float initializer for the integer, scale and zero point initializers that make it; the
    names used (a name some other node still reads with another value gets a suffix)."""
    model.graph.initializer.remove(tensor)
    present = {t.name: t for t in model.graph.initializer}
    names = []
    for name, value in new:
        value, base, k = np.asarray(value), name, 0
        while name in present:
            held = constant_value(present[name])
            if np.array_equal(held, value) and held.dtype == value.dtype:
                break  # the same values under the same name: shared, read as they are
            k += 1
            name = f"{base}_{k}"
        if name not in present:
            model.graph.initializer.append(numpy_helper.from_array(value, name))
            present[name] = model.graph.initializer[-1]
        names.append(name)
    return names
