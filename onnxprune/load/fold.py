"""Constant folding: nodes whose inputs are all constants become initializers.

Exporters leave weights behind small constant subgraphs: the light zoo models fill every weight with
ConstantOfShape, inception_v1's classifier weight is a Reshape of a constant, tf2onnx casts int32
shape pieces. Folding them first lets every rule see plain initializers.

What is never folded: DequantizeLinear and QuantizeLinear (a QDQ model must stay QDQ), random ops,
control flow, ops of other domains, and anything that depends on a graph input. Initializers count as
constants even in IR 3, where they are also listed as (overridable) graph inputs; the result is
written at IR >= 4, where that reading is the definition.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.load.fold_limit import check_fold_size
from onnxprune.load.constants import MIN_IR_VERSION, constant_value, constant_values, foldable
from onnxprune.load.tensors import bodies


def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray],
              wanted: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Run `nodes` alone, constants fed as inputs: ONNX Runtime unoptimized (one run: it would execute
    the whole subgraph for each output asked separately), onnx.reference if it refuses."""
    inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for n, v in feeds.items()]
    outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in wanted]
    graph = onnx.helper.make_graph(nodes, "fold", inputs, outputs)
    sub = onnx.helper.make_model(graph, opset_imports=list(model.opset_import),
                                 ir_version=max(model.ir_version, MIN_IR_VERSION))
    try:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        from onnxprune.progress import runtime_log_level
        options.log_severity_level = runtime_log_level()
        options.enable_cpu_mem_arena = False  # the arena would keep a copy of every result alive
        session = ort.InferenceSession(sub.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(wanted, feeds)
    except Exception:
        from onnx.reference import ReferenceEvaluator
        values = ReferenceEvaluator(sub).run(wanted, feeds)
    del feeds
    values.reverse()
    for name in wanted:  # hand each array over and drop it, so stored and evaluated copies do not pile up
        yield name, np.asarray(values.pop())


def fold_constants(model: onnx.ModelProto, in_place: bool = False) -> onnx.ModelProto:
    """A copy of `model` with every constant-only node replaced by an initializer; `model` is not
    touched unless `in_place` (a model the caller loaded itself: no second copy of its weights)."""
    definitions = constant_values(model)
    constant = set(definitions)
    graph_outputs = {o.name for o in model.graph.output}
    folded: list[int] = []
    for i, node in enumerate(model.graph.node):  # nodes are topologically sorted (an ONNX rule)
        if foldable(node, constant) and not graph_outputs.intersection(node.output):
            folded.append(i)
            constant.update(t for t in node.output if t)
    if in_place:
        result = model
    else:
        result = onnx.ModelProto()
        result.CopyFrom(model)
    if result.ir_version < MIN_IR_VERSION:
        _make_initializers_constant(result)
    if not folded:
        return result

    folded_set = set(folded)
    produced = {t for i in folded for t in model.graph.node[i].output if t}
    consumed_later = {t for i, n in enumerate(model.graph.node) if i not in folded_set for t in _names_read(n)}
    wanted = sorted(produced & consumed_later)
    needed = {t for i in folded for t in model.graph.node[i].input if t and t not in produced}
    feeds = {t: constant_value(definitions[t]) for t in sorted(needed)}
    nodes = [_copied(model.graph.node[i]) for i in folded]  # kept: `result` may be `model`
    check_fold_size(model, nodes, feeds)  # before anything is evaluated
    for i in sorted(folded_set, reverse=True):  # deleting in place: big messages are never copied
        del result.graph.node[i]
    for name, value in _evaluate(result, nodes, feeds, wanted):
        tensor = _add_initializer(result.graph, name, value)
        if tensor is not None:
            raw = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
            del value  # gone before protobuf copies the bytes: two copies of the largest weight at once, not three
            tensor.raw_data = raw
            del raw
    _drop_unused_constants(result)
    return result


def _copied(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _add_initializer(graph: onnx.GraphProto, name: str, value: np.ndarray) -> onnx.TensorProto | None:
    """Append an initializer for `value`, built in place (from_array + append would copy it twice):
    whole for strings (None returned), else name, type and dims only; the caller sets its raw_data."""
    tensor = graph.initializer.add()
    if value.dtype == object or value.dtype.kind in "SU":  # strings have no raw form
        tensor.CopyFrom(numpy_helper.from_array(value, name))
        return None
    tensor.name = name
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    tensor.dims.extend(value.shape)
    return tensor


def _names_read(node: onnx.NodeProto) -> set[str]:
    """Inputs of `node`, and outer-scope names its subgraphs (If/Loop bodies) read."""
    names = {t for t in node.input if t}
    for sub in bodies(node):
        for inner in sub.node:
            names |= _names_read(inner)
    return names


def _make_initializers_constant(model: onnx.ModelProto) -> None:
    """IR 3 lists initializers among the graph inputs; from IR 4 on they are plain constants."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = MIN_IR_VERSION


def _drop_unused_constants(model: onnx.ModelProto) -> None:
    """Initializers and Constant nodes that only fed folded nodes."""
    used = {t for n in model.graph.node for t in _names_read(n)} | {o.name for o in model.graph.output}
    listed_inputs = {vi.name for vi in model.graph.input}
    for i in reversed(range(len(model.graph.initializer))):
        name = model.graph.initializer[i].name
        if name not in used and name not in listed_inputs:
            del model.graph.initializer[i]
    for i in reversed(range(len(model.graph.node))):
        node = model.graph.node[i]
        if node.op_type == "Constant" and not any(t in used for t in node.output):
            del model.graph.node[i]
