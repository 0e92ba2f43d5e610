"""Static values of small shape-computing subgraphs (Shape->Gather->Unsqueeze->Concat and kin).

Exporters compute Reshape targets and Slice bounds at run time from tensor shapes. Rules need their
values, and the rewrite must know which entries are truly static (a channel count) and which follow
a dynamic dim (the batch). Each value is an array plus a `known` mask of the same shape; a dim is
known when the model declares it static, whatever shape this analysis happened to use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from onnxprune.graph.model_graph import ModelGraph

Value = tuple[np.ndarray, np.ndarray]  # values, known mask
MAX_ELEMENTS = 64


def _binary(fn: Callable) -> Callable:
    def op(g, node, args):
        (a, ka), (b, kb) = args[0], args[1]
        with np.errstate(all="ignore"):
            out = fn(a, b)
        return out, np.broadcast_to(ka, out.shape) & np.broadcast_to(kb, out.shape)
    return op


def _int_div(a, b):
    if np.issubdtype(np.result_type(a, b), np.integer):
        return np.trunc(a / np.where(b == 0, 1, b)).astype(np.result_type(a, b))
    return a / b


def _shape(g, node, args):
    x = node.inputs[0]
    shape = g.shape(x)
    static = g.static_dims(x)
    if shape is None:
        return None
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    sl = slice(start, None if end is None else int(end))
    return np.array(shape, dtype=np.int64)[sl], np.array(static, dtype=bool)[sl]


def _size(g, node, args):
    shape = g.shape(node.inputs[0])
    if shape is None:
        return None
    return np.array(int(np.prod(shape)), dtype=np.int64), np.array(all(g.static_dims(node.inputs[0])))


def _gather(g, node, args):
    (data, known), (idx, kidx) = args
    if not kidx.all():
        return None
    axis = int(node.attrs.get("axis", 0))
    return np.take(data, idx.astype(np.int64), axis=axis), np.take(known, idx.astype(np.int64), axis=axis)


def _reshaping(g, node, args):
    shape = g.shape(node.outputs[0])
    if shape is None:
        return None
    (v, k) = args[0]
    return v.reshape(shape), k.reshape(shape)


def _concat(g, node, args):
    axis = int(node.attrs.get("axis", 0))
    return np.concatenate([a for a, _ in args], axis=axis), np.concatenate([k for _, k in args], axis=axis)


def _slice(g, node, args):
    (v, k) = args[0]
    if g.opset < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes = node.attrs.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        if not all(kk.all() for _, kk in args[1:]):
            return None
        starts, ends = args[1][0].tolist(), args[2][0].tolist()
        axes = args[3][0].tolist() if len(args) > 3 else list(range(len(starts)))
        steps = args[4][0].tolist() if len(args) > 4 else [1] * len(starts)
    index = [slice(None)] * v.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[int(a)] = slice(int(s), int(e), int(st))
    return v[tuple(index)], k[tuple(index)]


def _cast(g, node, args):
    import onnx
    (v, k) = args[0]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"]))
    return v.astype(dtype), k


def _unary(fn):
    return lambda g, node, args: (fn(args[0][0]), args[0][1])


def _where(g, node, args):
    (c, kc), (a, ka), (b, kb) = args
    out = np.where(c, a, b)
    known = np.broadcast_to(kc, out.shape) & np.where(c, np.broadcast_to(ka, out.shape), np.broadcast_to(kb, out.shape))
    return out, known


def _constant_of_shape(g, node, args):
    (shape, known) = args[0]
    if not known.all() or np.prod(shape) > MAX_ELEMENTS:
        return None
    from onnx import numpy_helper
    fill = numpy_helper.to_array(node.attrs["value"]) if "value" in node.attrs else np.zeros(1, np.float32)
    out = np.full(shape.astype(np.int64), fill.reshape(-1)[0], dtype=fill.dtype)
    return out, np.ones(out.shape, dtype=bool)  # one fill value everywhere: known whatever the shape


EVALUATORS: dict[str, Callable] = {
    "Shape": _shape, "Gather": _gather, "Unsqueeze": _reshaping, "Squeeze": _reshaping,
    "Reshape": _reshaping, "Flatten": _reshaping, "Concat": _concat, "Slice": _slice, "Cast": _cast,
    "Identity": _unary(lambda a: a), "Neg": _unary(np.negative), "Abs": _unary(np.abs),
    "Not": _unary(np.logical_not), "Size": _size, "Floor": _unary(np.floor), "Ceil": _unary(np.ceil), "Sqrt": _unary(np.sqrt),
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply), "Div": _binary(_int_div),
    "Mod": _binary(np.mod), "Max": _binary(np.maximum), "Min": _binary(np.minimum),
    "Equal": _binary(np.equal), "Less": _binary(np.less), "Greater": _binary(np.greater), "Where": _where,
    "ConstantOfShape": _constant_of_shape,
}
_INPUTS_ONLY_SHAPE = {"Shape", "Size"}  # ops whose data input need not itself be static


def static_value(g: "ModelGraph", tensor: str, memo: dict[str, Value | None]) -> Value | None:
    """The value of `tensor` with its known mask, or None if it is not a small computable value."""
    if tensor in memo:
        return memo[tensor]
    memo[tensor] = None  # guards against cycles while recursing
    result = None
    const = g.const(tensor)
    if const is not None:
        if const.size <= MAX_ELEMENTS:
            result = (np.asarray(const), np.ones(const.shape, dtype=bool))
    else:
        producer = g.producer.get(tensor)
        node = g.nodes[producer] if producer is not None else None
        fn = EVALUATORS.get(node.op) if node is not None else None
        if fn is not None and node.outputs[0] == tensor:
            if node.op in _INPUTS_ONLY_SHAPE:
                args = []
            else:
                args = [static_value(g, t, memo) for t in node.inputs if t]
            if all(a is not None for a in args):
                try:
                    result = fn(g, node, args)
                except Exception:
                    result = None
                if result is not None and np.asarray(result[0]).size > MAX_ELEMENTS:
                    result = None
    memo[tensor] = result
    return result
