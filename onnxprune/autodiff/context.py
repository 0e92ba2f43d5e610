"""The workbench gradient rules write on: emit nodes, make constants, read shapes, sum broadcasts.

Rules never build protos themselves; they call these helpers, so naming, constant caching and
dtype handling live in one place. Shapes are the concrete probe shapes of the forward graph
(ModelGraph); anything that depends on the batch size is computed at run time instead.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph, Node

Shape = tuple[int, ...]
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16}


class GradContext:
    """Collects the backward nodes and constants of one training graph."""

    def __init__(self, g: ModelGraph, forward_nodes: list[onnx.NodeProto], opset: int):
        self.g = g
        self.opset = opset
        self.forward_nodes = forward_nodes  # copies, so rules may add outputs (MaxPool Indices)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        graph = g.model.graph
        self._taken = (set(g.shapes) | set(g.constants) | {t for n in g.nodes for t in n.outputs + n.inputs}
                       | {v.name for v in list(graph.input) + list(graph.output) + list(graph.initializer)})
        self._consts: dict[tuple, str] = {}
        self._shape_of: dict[str, str] = {}
        self._counter = 0
        self.grad_types: dict[str, int] = {}  # gradient tensor -> element type of the tensor it is the gradient of

    # ---- names and nodes --------------------------------------------------------------------

    def fresh(self, hint: str) -> str:
        """A tensor name not used anywhere in the model."""
        while True:
            self._counter += 1
            name = f"{hint}__{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def reserve(self, name: str) -> str:
        """`name` itself if free, else a fresh variant (for the graph's own inputs and outputs)."""
        if name not in self._taken:
            self._taken.add(name)
            return name
        return self.fresh(name)

    def emit(self, op: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1, **attrs) -> str | list[str]:
        """Append one node; returns its output name (or names when more than one was asked for)."""
        if isinstance(outputs, int):
            names = [self.fresh(f"grad/{op}") for _ in range(outputs)]
        else:
            names = list(outputs)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op, list(inputs), names, name=names[0] + "/node", **attrs))
        return names[0] if len(names) == 1 else names

    def masked(self, cond: str, value: str) -> str:
        """`value` where the boolean `cond` holds, 0 elsewhere: Where(cond, value, 0) as value * cond.
        ONNX Runtime's Where is a scalar loop (4x slower than Cast + Mul on a 64x64x8x8 ReLU mask);
        the only difference is that a non-finite `value` at a masked-out position gives NaN, not 0."""
        return self.emit("Mul", [value, self.emit("Cast", [cond], to=self.elem_type(value))])

    def forward_output(self, node: Node, index: int) -> str:
        """Output `index` of a forward node, added to it if the model never asked for it."""
        proto = self.forward_nodes[node.index]
        while len(proto.output) <= index:
            proto.output.append("")
        if not proto.output[index]:
            proto.output[index] = self.fresh(f"{node.name}/out{index}")
        return proto.output[index]

    # ---- constants ----------------------------------------------------------------------------

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        """An initializer holding `value` (identical small constants are shared)."""
        value = np.asarray(value)
        key = (value.dtype.str, value.shape, value.tobytes()) if value.size <= 64 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.fresh(f"grad/{hint}")
        self.initializers.append(numpy_helper.from_array(value, name))
        if key is not None:
            self._consts[key] = name
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), "ints")

    def scalar(self, value: float, like: str) -> str:
        """A rank-0 constant with the element type of tensor `like`."""
        return self.const(np.asarray(value, dtype=self.np_dtype(like)), "scalar")

    # ---- facts about forward tensors ------------------------------------------------------------

    def shape(self, tensor: str) -> Shape:
        shape = self.g.shape(tensor)
        if shape is None:
            raise BadInputError(f"autodiff: the shape of tensor '{tensor}' is unknown; pass input_shapes")
        return tuple(int(d) for d in shape)

    def rank(self, tensor: str) -> int:
        return len(self.shape(tensor))

    def elem_type(self, tensor: str) -> int:
        if tensor in self.g.constants:
            return helper.np_dtype_to_tensor_dtype(self.g.constants[tensor].dtype)
        return self.g.dtypes.get(tensor) or self.grad_types.get(tensor, onnx.TensorProto.FLOAT)

    def np_dtype(self, tensor: str) -> np.dtype:
        return helper.tensor_dtype_to_np_dtype(self.elem_type(tensor))

    def is_float(self, tensor: str | None) -> bool:
        return bool(tensor) and self.elem_type(tensor) in FLOAT_TYPES

    def ints_of(self, tensor: str | None, what: str, node: Node) -> list[int] | None:
        """A constant (or statically computable) int vector input, e.g. Reshape shapes, Slice starts."""
        if not tensor:
            return None
        values = self.g.static_ints(tensor)
        if values is None:
            raise BadInputError(f"autodiff: {self.g.where(node)} needs a constant {what}, computed at run time")
        return values

    # ---- run-time helpers -----------------------------------------------------------------------

    def shape_of(self, tensor: str) -> str:
        """Shape(tensor), computed once per tensor."""
        if tensor not in self._shape_of:
            self._shape_of[tensor] = self.emit("Shape", [tensor])
        return self._shape_of[tensor]

    def reshape_like(self, grad: str, like: str) -> str:
        """Reshape `grad` to the shape `like` has at run time (static if `like` is a constant)."""
        if like in self.g.constants:
            return self.emit("Reshape", [grad, self.ints(self.shape(like))])
        return self.emit("Reshape", [grad, self.shape_of(like)])

    def zeros_like(self, tensor: str) -> str:
        zero = numpy_helper.from_array(np.zeros(1, dtype=self.np_dtype(tensor)))
        return self.emit("ConstantOfShape", [self.shape_of(tensor)], value=zero)

    def count(self, big: str, small: str, like: str) -> str:
        """Size(big) / Size(small) as a scalar of `like`'s type: elements averaged by a reduction."""
        to = self.elem_type(like)
        a = self.emit("Cast", [self.emit("Size", [big])], to=to)
        b = self.emit("Cast", [self.emit("Size", [small])], to=to)
        return self.emit("Div", [a, b])

    def sum_to(self, grad: str, grad_shape: Shape, target: str) -> str:
        """Sum a gradient of shape `grad_shape` over the axes along which `target` was broadcast."""
        target_shape = self.shape(target)
        lead = len(grad_shape) - len(target_shape)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(target_shape)
                                    if d == 1 and grad_shape[lead + i] != 1]
        if not axes:
            return grad
        reduced = self.emit("ReduceSum", [grad, self.ints(axes)], keepdims=1)
        return self.reshape_like(reduced, target) if lead else reduced

    def reduce(self, op: str, tensor: str, axes: Sequence[int], keepdims: int = 1) -> str:
        """A Reduce* node; axes are an input from opset 18 (ReduceSum: 13), an attribute before."""
        if op == "ReduceSum" or self.opset >= 18:
            return self.emit(op, [tensor, self.ints(axes)], keepdims=keepdims)
        return self.emit(op, [tensor], axes=list(axes), keepdims=keepdims)

    def evaluate(self, op: str, inputs: Sequence[np.ndarray | None], attrs: dict) -> np.ndarray:
        """Run one op in ONNX Runtime at build time (to read off the matrix of a linear op)."""
        import onnxruntime as ort

        names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
        elem = helper.np_dtype_to_tensor_dtype(inputs[0].dtype)
        graph = helper.make_graph(
            [helper.make_node(op, names, ["out"], **attrs)], "probe",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for n, v in zip(names, inputs) if v is not None],
            [helper.make_tensor_value_info("out", elem, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=8)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {n: v for n, v in zip(names, inputs) if v is not None})[0]

    def axis_adjoint(self, grad: str, rank: int, axis: int, matrix: np.ndarray, like: str) -> str:
        """Apply matrix^T along `axis` of `grad`, where the forward op applied `matrix` (n_out x n_in).

        The adjoint of any per-axis linear map (Resize, strided Slice) is one MatMul.
        """
        matrix = np.ascontiguousarray(matrix, dtype=self.np_dtype(like))
        if axis == rank - 1:
            return self.emit("MatMul", [grad, self.const(matrix, "axis_map")])
        if axis == rank - 2:
            return self.emit("MatMul", [self.const(np.ascontiguousarray(matrix.T), "axis_map"), grad])
        perm = [a for a in range(rank) if a != axis] + [axis]
        moved = self.emit("MatMul", [self.emit("Transpose", [grad], perm=perm), self.const(matrix, "axis_map")])
        return self.emit("Transpose", [moved], perm=[int(i) for i in np.argsort(perm)])

    def transpose_last2(self, tensor: str, rank: int) -> str:
        perm = list(range(rank - 2)) + [rank - 1, rank - 2]
        return self.emit("Transpose", [tensor], perm=perm)


def attr(node: Node, name: str, default=None):
    """A node attribute with bytes decoded to str (auto_pad, mode, ...)."""
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value
