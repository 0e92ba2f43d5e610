"""The model as a graph: nodes, constants and concrete tensor shapes, plus a networkx view.

Constants are initializers and the outputs of `Constant` nodes alike (paddle2onnx stores weights as
Constant nodes). Shapes are made concrete by fixing dynamic input dims, running ONNX shape
inference, and probing ONNX Runtime for whatever inference could not resolve.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping

import networkx as nx
import numpy as np
import onnx

from onnxprune.errors import BadInputError, first_line

from onnxprune.graph.constants import Constants
from onnxprune.load.tensors import bodies

Shape = tuple[int, ...]
DEFAULT_BATCH = 1
DEFAULT_DYNAMIC_DIM = 256  # a multiple of 32 and 64, so strided detectors and patch models accept it


@dataclass
class Node:
    """One ONNX node, addressed by its position in the graph."""

    index: int
    proto: onnx.NodeProto
    attrs: dict = field(default_factory=dict)

    @property
    def op(self) -> str:
        return self.proto.op_type

    @property
    def name(self) -> str:
        return self.proto.name or (self.proto.output[0] if self.proto.output else f"node{self.index}")

    @property
    def inputs(self) -> list[str]:
        return list(self.proto.input)

    @property
    def outputs(self) -> list[str]:
        return list(self.proto.output)

    def input(self, i: int) -> str | None:
        return self.proto.input[i] if i < len(self.proto.input) and self.proto.input[i] else None


class ModelGraph:
    """Read-only facts about a model that rules and passes query: shapes, constants, producers."""

    hidden = False  # whether rules may carry the residual-stream width through norms (--hidden)

    def __init__(self, model: onnx.ModelProto, input_shapes: Mapping[str, Shape] | None = None):
        self.model = model
        self.opset = _default_opset(model)
        self.nodes = [Node(i, n, {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})
                      for i, n in enumerate(model.graph.node)]
        self.constants = Constants()  # decoded on access: the proto holds the weights, once
        self.constant_node: dict[str, int] = {}  # Constant-node output name -> node index
        self.initializer_names = {init.name for init in model.graph.initializer}
        for init in model.graph.initializer:
            self.constants.add(init.name, init)
        for node in self.nodes:
            if node.op == "Constant" and node.outputs:
                value = _constant_node_value(node)
                if value is not None:
                    self.constants.add(node.outputs[0], value)
                    self.constant_node[node.outputs[0]] = node.index
        self.inputs = [i.name for i in model.graph.input if i.name not in self.initializer_names]
        self.outputs = [o.name for o in model.graph.output]
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for node in self.nodes:  # the proto's fields, not Node's list copies: 100,000 nodes
            for t in node.proto.output:
                if t:
                    self.producer[t] = node.index
            for t in node.proto.input:
                if t:
                    self.consumers.setdefault(t, []).append(node.index)
        self.subgraph_nodes = self._link_subgraph_reads()
        self.input_shapes = resolve_input_shapes(model, input_shapes)
        self.problems: list[str] = []  # why some shapes stayed unknown, shown by inspect
        self.shapes, self.dtypes = infer_concrete_shapes(model, self.input_shapes, self.problems)
        for name in self.constants:
            self.shapes[name] = self.constants.shape(name)
        self._static_memo: dict = {}
        self._symbolic: dict[str, tuple[bool, ...]] | None = None

    def _link_subgraph_reads(self) -> list[int]:
        """If/Loop/Scan read outer tensors inside their bodies: count each as a consumer of those
        names, so the node (which has no rule) freezes them instead of being invisible."""
        found = []
        for node in self.nodes:
            held = bodies(node.proto)
            if not held:
                continue
            found.append(node.index)
            for name in sorted(set().union(*(_outer_reads(b) for b in held))):
                users = self.consumers.setdefault(name, [])
                if node.index not in users:
                    users.append(node.index)
        return found

    @cached_property
    def nx(self) -> nx.DiGraph:
        """The node graph for networkx algorithms (topological order, dominators, reachability),
        built on first use: node index -> consumer node index, each edge naming its tensor."""
        g = nx.DiGraph()
        for node in self.nodes:
            g.add_node(node.index, op=node.op, name=node.name)
        for node in self.nodes:
            for t in node.outputs:
                for c in self.consumers.get(t, []):
                    g.add_edge(node.index, c, tensor=t)
        return g

    def shape(self, tensor: str) -> Shape | None:
        return self.shapes.get(tensor)

    def const(self, tensor: str | None) -> np.ndarray | None:
        return None if tensor is None else self.constants.get(tensor)

    def is_const(self, tensor: str | None) -> bool:
        return tensor is not None and tensor in self.constants

    def static_dims(self, tensor: str) -> tuple[bool, ...]:
        """Which dims of `tensor` the model itself declares static (not just static in this analysis)."""
        if self._symbolic is None:
            self._symbolic = _static_by_variation(self)
        shape = self.shape(tensor)
        if tensor in self.constants:
            return (True,) * len(shape)
        return self._symbolic.get(tensor, (False,) * (len(shape) if shape else 0))

    def static_value(self, tensor: str | None):
        """(values, known mask) of a small run-time computed tensor, or None (see static_values.py)."""
        from onnxprune.graph.static_values import static_value
        return None if tensor is None else static_value(self, tensor, self._static_memo)

    def static_ints(self, tensor: str | None) -> list[int] | None:
        """A fully static int vector (constant or computed from static dims), else None."""
        value = self.static_value(tensor)
        if value is None or not value[1].all():
            return None
        return [int(v) for v in np.asarray(value[0]).reshape(-1)]

    def where(self, node: Node) -> str:
        return f"node '{node.name}' ({node.op})"


def _outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph (and its nested subgraphs) reads but does not define."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    defined |= {t for n in graph.node for t in n.output}
    reads = set()
    for n in graph.node:
        reads.update(t for t in n.input if t)
        for sub in bodies(n):
            reads |= _outer_reads(sub)
    reads.update(o.name for o in graph.output)
    return reads - defined


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def _constant_node_value(node: Node) -> onnx.TensorProto | np.ndarray | None:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in node.attrs:
            v = node.attrs[key]
            if isinstance(v, onnx.TensorProto):
                return v  # decoded on access, like initializers
            if key.startswith("value_float"):
                return np.asarray(v, dtype=np.float32)
            return np.asarray(v, dtype=np.int64)
    return None


def _dynamic_input_dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Per graph input, the axes the model leaves dynamic (no positive dim_value)."""
    init_names = {i.name for i in model.graph.initializer}
    result = {}
    for inp in model.graph.input:
        if inp.name in init_names or not inp.type.tensor_type.HasField("shape"):
            continue
        dyn = [a for a, d in enumerate(inp.type.tensor_type.shape.dim) if not (d.HasField("dim_value") and d.dim_value > 0)]
        if dyn:
            result[inp.name] = dyn
    return result


def _static_by_variation(g: "ModelGraph") -> dict[str, tuple[bool, ...]]:
    """Which dims stay put when the model's dynamic input dims change: those are static.

    Symbolic inference loses dims behind computed Reshapes, so the analysis is simply run again
    with every dynamic input dim changed, and dims that moved are dynamic.
    """
    dynamic = _dynamic_input_dims(g.model)
    if not dynamic:
        return {t: (True,) * len(s) for t, s in g.shapes.items()}
    varied = dict(g.input_shapes)
    for name, axes in dynamic.items():
        shape = list(varied[name])
        for a in axes:
            shape[a] = shape[a] + 1 if a == 0 else shape[a] + 64
        varied[name] = tuple(shape)
    other, _ = infer_concrete_shapes(g.model, varied)
    result = {}
    for t, s in g.shapes.items():
        o = other.get(t)
        result[t] = tuple(o is not None and len(o) == len(s) and o[a] == s[a] for a in range(len(s)))
    return result


def resolve_input_shapes(model: onnx.ModelProto, given: Mapping[str, Shape] | None) -> dict[str, Shape]:
    """Concrete shapes for the graph inputs: given ones win, dynamic dims get defaults."""
    given = dict(given or {})
    init_names = {i.name for i in model.graph.initializer}
    shapes: dict[str, Shape] = {}
    named: dict[str, int] = {}  # dim_param -> the value chosen for it
    for inp in model.graph.input:
        if inp.name in init_names:
            continue
        if inp.name in given:
            shapes[inp.name] = tuple(int(d) for d in given.pop(inp.name))
            continue
        if not inp.type.HasField("tensor_type") or not inp.type.tensor_type.HasField("shape"):
            raise BadInputError(f"input '{inp.name}' has no shape; pass --input-shape {inp.name}:DxDx...")
        dims = []
        for axis, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value)
            elif d.HasField("dim_param") and d.dim_param in named:  # one value per named dim
                dims.append(named[d.dim_param])
            else:
                dims.append(DEFAULT_BATCH if axis == 0 else DEFAULT_DYNAMIC_DIM)
                if d.HasField("dim_param") and d.dim_param:
                    named[d.dim_param] = dims[-1]
        shapes[inp.name] = tuple(dims)
    if given:
        raise BadInputError(f"--input-shape names unknown input(s) {sorted(given)}; the model's inputs are {list(shapes)}")
    return shapes


def fix_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Shape]) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs have the given static shapes and no stale value_info."""
    fixed = copy.deepcopy(model)
    del fixed.graph.value_info[:]
    for inp in fixed.graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            del dims[:]
            for v in input_shapes[inp.name]:
                dims.add().dim_value = int(v)
    for out in fixed.graph.output:  # let inference recompute output shapes
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    return fixed


SKELETON_LIMIT = 4096  # initializers above this many elements matter to inference by their shape only


def skeleton(model: onnx.ModelProto, input_shapes: Mapping[str, Shape]) -> onnx.ModelProto:
    """`model` for shape inference: large initializers become typed graph inputs (nothing big is
    copied or serialized), inputs get the given static shapes, value_info and output shapes go."""
    fixed = onnx.ModelProto()
    fixed.ir_version = max(model.ir_version, 4)  # initializers need not be inputs from IR 4 on
    fixed.opset_import.extend(model.opset_import)
    fixed.functions.extend(model.functions)
    graph = fixed.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    listed = {i.name for i in graph.input}
    for init in model.graph.initializer:
        if math.prod(init.dims) <= SKELETON_LIMIT:  # math.prod: np.prod took 0.7 s on 60,000 initializers
            graph.initializer.append(init)
        elif init.name not in listed:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    for inp in graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            del dims[:]
            for v in input_shapes[inp.name]:
                dims.add().dim_value = int(v)
    for out in graph.output:  # let inference recompute output shapes
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    return fixed


def infer_concrete_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Shape],
                          problems: list[str] | None = None) -> tuple[dict[str, Shape], dict[str, int]]:
    """Static shape and element type of every tensor for the given input shapes; why some stayed
    unknown is appended to `problems`."""
    fixed = skeleton(model, input_shapes)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:
        inferred = fixed
    shapes: dict[str, Shape] = {}
    dtypes: dict[str, int] = {}
    for vi in itertools.chain(inferred.graph.value_info, inferred.graph.input, inferred.graph.output):
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        if tt.elem_type:
            dtypes[vi.name] = tt.elem_type
        if tt.HasField("shape"):  # static when every dim has a value (one pass over the dims)
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            if None not in dims:
                shapes[vi.name] = tuple(dims)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        dtypes[init.name] = init.data_type
    read = {t for n in model.graph.node for t in n.input} | {o.name for o in model.graph.output}
    missing = [t for n in model.graph.node if n.op_type != "Constant" for t in n.output
               if t and t not in shapes and t in read]  # an unread output (Dropout's mask) needs no probe
    if missing:
        shapes.update(_probe_shapes(fix_input_shapes(model, input_shapes), input_shapes, missing, dtypes,
                                    problems if problems is not None else []))
    return shapes, dtypes


def _probe_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Shape], names: Iterable[str],
                  dtypes: dict[str, int], problems: list[str]) -> dict[str, Shape]:
    """Run ONNX Runtime once with the unresolved tensors exposed as outputs and read their shapes."""
    from onnxprune.load.data import synthetic_feed
    from onnxprune.load.runtime import session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        if name not in existing:
            probe.graph.output.add().name = name
    try:
        sess = session(probe)
        feed = synthetic_feed(sess, input_shapes)
        outs = sess.run(wanted, feed)
    except Exception as exc:
        first = first_line(exc)
        problems.append(f"{len(wanted)} tensor shapes unknown: ONNX Runtime could not run the model on synthetic "
                        f"inputs of shapes {dict(input_shapes)} ({first[:200]}); pass --input-shape or --calib")
        return {}
    result = {}
    for name, value in zip(wanted, outs):
        value = np.asarray(value)
        result[name] = tuple(value.shape)
        dtypes.setdefault(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype))
    return result
