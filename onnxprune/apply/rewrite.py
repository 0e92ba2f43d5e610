"""Apply a Plan: slice every constant along its pruned slots, then let each rule fix what it owns.

Constants (initializers and Constant nodes alike) are sliced generically: parameters are just
tensors with slots. Shape-carrying attributes and inputs (Conv `group`, Split sizes, Reshape shapes,
Slice bounds, Gather indices) are recomputed by the `update` hook of the op's rule. Stale shape
annotations are dropped and dead nodes removed with onnx-graphsurgeon's cleanup.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from onnxprune.apply.tidy import tidied
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.model_graph import ModelGraph, Node
from onnxprune.couple.ops import rule_for, Barrier, Slot
from onnxprune.couple.plan import Plan
from onnxprune.load.external import INLINE, WorkFile, has_bound, is_bound, keeps_inline, sliced_blocks
from onnxprune.load.spill import EXTERNAL_MIN_BYTES


class RewriteError(OnnxPruneError):
    """A node the rewrite cannot follow for this plan; `node` names it, so a caller can keep the
    groups around it whole (select/rewritable.py) instead of failing the run."""

    def __init__(self, message: str, node: str):
        super().__init__(message)
        self.node = node


class RewriteContext:
    """What an op rule's `update` may read (old and new sizes) and change (attributes, inputs)."""

    def __init__(self, g: ModelGraph, model: onnx.ModelProto, kept: dict[Slot, np.ndarray]):
        self.g = g
        self.model = model
        self._kept = kept
        self._names = {t for n in model.graph.node for t in [*n.input, *n.output, n.name]}  # node names too:
        # a model pruned twice (--steps) already holds the nodes the first rewrite added
        self._names |= {i.name for i in model.graph.initializer}

    def kept(self, tensor: str, axis: int) -> np.ndarray | None:
        return self._kept.get(Slot(tensor, axis))

    def old_dim(self, tensor: str, axis: int) -> int:
        return self.g.shape(tensor)[axis]

    def new_dim(self, tensor: str, axis: int) -> int:
        kept = self.kept(tensor, axis)
        return self.old_dim(tensor, axis) if kept is None else len(kept)

    def set_attr(self, node: Node, name: str, value) -> None:
        proto = self.model.graph.node[node.index]
        for i, attr in enumerate(proto.attribute):
            if attr.name == name:
                del proto.attribute[i]
                break
        if value is not None:
            proto.attribute.append(onnx.helper.make_attribute(name, value))

    def _unique(self, base: str) -> str:
        name, k = base, 0
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def add_to_input(self, node: Node, index: int, delta: np.ndarray) -> None:
        """Feed `input + delta` to input `index` of `node` (a run-time shape with static changes)."""
        proto = self.model.graph.node[node.index]
        source = proto.input[index]
        const = self._unique(f"{source}_delta")
        out = self._unique(f"{source}_pruned")
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(delta), const))
        self.model.graph.node.append(onnx.helper.make_node("Add", [source, const], [out], name=self._unique(f"{node.name}_shape_fix")))
        proto.input[index] = out

    def set_input(self, node: Node, index: int, value: np.ndarray) -> None:
        """Point input `index` of `node` at a new constant (never edit a constant others share)."""
        proto = self.model.graph.node[node.index]
        name = self._unique(f"{proto.input[index] if index < len(proto.input) and proto.input[index] else node.name}_pruned")
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        while len(proto.input) <= index:
            proto.input.append("")
        proto.input[index] = name


def apply_plan(plan: Plan, overrides: dict[str, np.ndarray] | None = None,
               presliced: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A new, smaller model with the plan's channels removed; the original is not touched.

    `overrides` replaces dense constant values before slicing (recovery's re-solved weights);
    `presliced` gives values already cut to the plan's shape (sequential recovery's).
    """
    dep = plan.dep
    g = dep.graph
    kept = dep.kept_indices(plan.removed)
    model = _copy_without_initializers(g.model)  # the big tensors are re-added sliced, not copied twice
    _slice_constants(g, model, kept, {**(overrides or {}), **(presliced or {})}, set(presliced or ()))
    ctx = RewriteContext(g, model, kept)
    touched = {slot.tensor for slot in kept}
    for node in g.nodes:
        rule = rule_for(node)
        if rule is None or not touched.intersection(node.inputs + node.outputs):
            continue  # only nodes next to a pruned tensor have anything to recompute
        try:
            rule.update(ctx, node)
        except Barrier as exc:
            raise RewriteError(f"cannot rewrite {g.where(node)}: {exc}", node.name) from None
    return _tidy(model, g.model)


def _copy_without_initializers(source: onnx.ModelProto) -> onnx.ModelProto:
    """Everything of `source` but its initializers (which the caller adds, sliced or as they are)."""
    model = onnx.ModelProto()
    model.ir_version = source.ir_version
    for name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(model, name, getattr(source, name))
    model.opset_import.extend(source.opset_import)
    model.metadata_props.extend(source.metadata_props)
    model.functions.extend(source.functions)
    graph, src = model.graph, source.graph
    graph.name, graph.doc_string = src.name, src.doc_string
    graph.node.extend(src.node)
    graph.input.extend(src.input)
    graph.output.extend(src.output)
    graph.sparse_initializer.extend(src.sparse_initializer)
    return model


def _slice_constants(g: ModelGraph, model: onnx.ModelProto, kept: dict[Slot, np.ndarray],
                     overrides: dict[str, np.ndarray], cut_already: set[str] = frozenset()) -> None:
    by_tensor: dict[str, list[tuple[int, np.ndarray]]] = {name: [] for name in overrides}
    for slot, idx in kept.items():
        if slot.tensor in g.constants:
            by_tensor.setdefault(slot.tensor, []).append((slot.axis, idx))
    for init in g.model.graph.initializer:  # untouched initializers are copied as they are
        if init.name not in by_tensor:
            model.graph.initializer.append(init)
    if not by_tensor:
        return
    graph_inputs = {vi.name: vi for vi in model.graph.input}
    work = _work_file(g.model)
    bound = {t.name: t for t in g.model.graph.initializer if is_bound(t)} if work is not None else {}
    for name, cuts in by_tensor.items():
        source = bound.get(name) if name not in overrides else None
        if source is not None:  # sliced from its file a block of rows at a time, straight to the work file
            tensor = model.graph.initializer.add(name=name, data_type=source.data_type)
            kept_on = dict(cuts)
            tensor.dims.extend(len(kept_on[a]) if a in kept_on else d for a, d in enumerate(source.dims))
            work.add(tensor, sliced_blocks(source, cuts))
            _resize_input(graph_inputs.get(name), tensor.dims)
            continue
        value = overrides.pop(name) if name in overrides else g.constants[name]  # held only while written
        g.constants.release() if hasattr(g.constants, "release") else None  # only `value` holds it now
        for axis, idx in (cuts if name not in cut_already else ()):
            value = np.take(value, idx, axis=axis)  # each cut drops the larger array before it
        if name in g.initializer_names:
            _set_tensor(model.graph.initializer.add(), name, value, work)  # built in place: append would copy
            _resize_input(graph_inputs.get(name), value.shape)
        else:
            proto = model.graph.node[g.constant_node[name]]
            for attr in proto.attribute:
                if attr.name == "value":
                    _set_tensor(attr.t, name, value)
        del value


def _resize_input(vi: onnx.ValueInfoProto | None, shape) -> None:
    """Old IR versions list initializers among the inputs: their declared shape follows the slice."""
    if vi is not None:
        for d, v in zip(vi.type.tensor_type.shape.dim, shape):
            d.dim_value = v


def _work_file(model: onnx.ModelProto) -> WorkFile | None:
    """Where a model whose weights are read from files (external.py) gets its sliced tensors: a work
    data file, so the pruned weights are not held in memory either."""
    if not has_bound(model):
        return None
    return WorkFile(INLINE + "pruned" if keeps_inline(model) else "pruned")


def _set_tensor(tensor: onnx.TensorProto, name: str, value: np.ndarray, work: WorkFile | None = None) -> None:
    """Fill `tensor` with `value` as numpy_helper.from_array would, without its intermediate proto
    (written to `work` instead when it is large)."""
    if value.dtype.kind not in "fiub" or value.dtype.byteorder == ">":  # strings, packed 4-bit types
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return
    tensor.Clear()
    tensor.name = name
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    tensor.dims.extend(value.shape)
    if work is not None and value.nbytes >= EXTERNAL_MIN_BYTES:
        work.add(tensor, value)
        return
    tensor.raw_data = np.ascontiguousarray(value).tobytes()


def _tidy(model: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """Drop stale intermediate shapes, remove what no longer feeds an output, sort nodes; the graph's
    outputs keep their original declarations (graphsurgeon rewrites sequence and map types)."""
    del model.graph.value_info[:]
    out = tidied(model)  # the same result in linear time, for the graphs it covers
    if out is None:
        graph = gs.import_onnx(model)
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.producer_name = model.producer_name
    out.producer_version = model.producer_version
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    del out.graph.value_info[:]
    del out.graph.output[:]
    out.graph.output.extend(original.graph.output)
    if out.ir_version < 4:  # IR 3 requires every initializer among the graph inputs
        listed = {i.name for i in out.graph.input}
        out.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                               for t in out.graph.initializer if t.name not in listed)
    return out
