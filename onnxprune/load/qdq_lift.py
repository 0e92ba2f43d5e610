"""Lift a QDQ model's weights to floats, so criteria and recovery can read and re-solve them.

ONNX Runtime's `quantize_static` stores each weight as integers behind a DequantizeLinear (per-channel
int8 weights, int32 biases with scale = input scale x weight scale). Every such DequantizeLinear whose
integers, scale and zero point are all initializers becomes one float initializer holding its output
(exactly as the node computes it), and its scheme is remembered by the weight's name. Activation
QuantizeLinear/DequantizeLinear pairs stay: they read activations, not initializers. A weight quantized at
run time (float constant -> QuantizeLinear -> DequantizeLinear) is first made integers (load/qdq_fold.py).
apply/qdq_lower.py puts the integers back after pruning.

Left alone (never lifted): a scale or zero point that is not an initializer, blocked quantization,
a non-float scale, scales that are not positive and finite, or an output the graph returns.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.load.constants import constant_value
from onnxprune.load.qdq_fold import fold_runtime_weights, runtime_weights
from onnxprune.load.qdq_params import QuantParams, dequantize, is_reduced
from onnxprune.load.tensors import bodies

_INTEGERS = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16,
             onnx.TensorProto.INT32}
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


def lift(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, QuantParams]]:
    """A copy of `model` with its constant-weight DequantizeLinears replaced by float initializers,
    and each lifted weight's scheme; `model` itself (not copied) and {} when there is none."""
    if model.ir_version < 4:  # IR 3 lists every initializer among the inputs: not worth the bookkeeping
        return model, {}
    runtime = runtime_weights(model)  # float constants quantized at run time: integers first (load/qdq_fold.py)
    found = _liftable(model)
    if not found and not runtime:
        return model, {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if runtime:
        fold_runtime_weights(out, runtime)
        found = _liftable(out)
    lifted: dict[str, QuantParams] = {}
    for i in sorted(found, reverse=True):  # from the back: earlier indices stay valid
        qp, weight = found[i]
        del out.graph.node[i]
        out.graph.initializer.append(numpy_helper.from_array(weight, qp.name))
        lifted[qp.name] = qp
    _drop_unused(out, {n for qp in lifted.values() for n in (qp.int_name, qp.scale_name, qp.zero_name) if n})
    return out, lifted


def _liftable(model: onnx.ModelProto) -> dict[int, tuple[QuantParams, np.ndarray]]:
    inits = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    found = {}
    for i, node in enumerate(model.graph.node):
        params = _params(node, inits, outputs)
        if params is not None:
            found[i] = params
    return found


def _params(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto],
            outputs: set[str]) -> tuple[QuantParams, np.ndarray] | None:
    """The scheme and the float value of a liftable DequantizeLinear, else None."""
    if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    names = list(node.input) + [""] * (3 - len(node.input))
    x, s, z = names[:3]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.output[0] in outputs or attrs.get("block_size", 0) or x not in inits or s not in inits:
        return None
    if (z and z not in inits) or inits[x].data_type not in _INTEGERS or inits[s].data_type not in _FLOATS:
        return None
    q, scale = constant_value(inits[x]), constant_value(inits[s])
    zero = constant_value(inits[z]) if z else np.zeros(scale.shape, q.dtype)
    same_shape = zero.shape == scale.shape or zero.size == scale.size == 1  # a [1] scale with a scalar zero point
    if zero.dtype != q.dtype or not same_shape or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        return None
    axis = None
    if scale.ndim == 1 and scale.size > 1:  # per channel along `axis`
        axis = int(attrs.get("axis", 1))
        axis = axis + q.ndim if axis < 0 else axis
        if not 0 <= axis < q.ndim or q.shape[axis] != scale.size:
            return None
    elif scale.size != 1:
        return None
    qp = QuantParams(node.output[0], x, s, z or None, q.dtype, axis, scale, zero, node.name,
                     [a for a in node.attribute], node.domain, bool(q.size and q.min() == np.iinfo(q.dtype).min),
                     is_reduced(q, zero))
    return qp, dequantize(q, scale, zero, axis)


def _drop_unused(model: onnx.ModelProto, candidates: set[str]) -> None:
    """Remove the lifted integers, scales and zero points no remaining node (or subgraph) reads."""
    used = {o.name for o in model.graph.output}
    for node in model.graph.node:
        used.update(node.input)
        for body in bodies(node):  # a subgraph may read an outer initializer by name
            used.update(i for n in body.node for i in n.input)
    for i in reversed(range(len(model.graph.initializer))):  # by index: no copy of what stays
        name = model.graph.initializer[i].name
        if name in candidates and name not in used:
            del model.graph.initializer[i]
