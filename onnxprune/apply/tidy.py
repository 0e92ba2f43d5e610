"""The rewrite's last step in linear time: dead nodes out, nodes in topological order, initializers in
first-use order, exactly as the onnx-graphsurgeon round trip `import_onnx -> cleanup -> toposort ->
export_onnx` left them (byte for byte: tests/test_tidy.py compares the two), without building its
object graph (which took longer than the whole analysis on 100,000-node graphs).

Graphs this does not cover (subgraphs, local functions, sparse initializers, names produced twice)
return None and take the graphsurgeon path.
"""

from __future__ import annotations

import onnx
from onnx import AttributeProto

# attribute type -> the one field graphsurgeon's re-encoding sets; any other attribute is re-encoded
_VALUE_FIELD = {AttributeProto.FLOAT: "f", AttributeProto.INT: "i", AttributeProto.STRING: "s",
                AttributeProto.TENSOR: "t", AttributeProto.FLOATS: "floats", AttributeProto.INTS: "ints",
                AttributeProto.STRINGS: "strings"}
_SUBGRAPH_TYPES = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
_NODE_FIELDS = {"op_type", "input", "output", "name", "domain", "attribute"}


def tidied(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """`model` (value_info already dropped) as graphsurgeon's round trip exports it, or None if the
    graph is outside what this reproduces. The caller sets the model-level fields, as for graphsurgeon."""
    graph = model.graph
    if model.functions or graph.sparse_initializer:
        return None
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for attr in node.attribute:
            if attr.type in _SUBGRAPH_TYPES:
                return None
        for name in node.output:
            if name:
                if name in producer:
                    return None  # one name, two producers: graphsurgeon's own rules apply
                producer[name] = index
    initializers = {t.name: i for i, t in enumerate(graph.initializer)}
    inputs = [vi for vi in graph.input if vi.name not in initializers]
    if len(initializers) != len(graph.initializer) or any(n in producer for n in initializers) or \
            any(vi.name in producer for vi in inputs):
        return None
    used = _used_nodes(graph, producer)
    if used is None:
        return None
    order = _level_order(graph, used, producer)
    if order is None:
        return None  # a cycle: graphsurgeon says so in its own words
    return _export(model, order, inputs, initializers)


def _used_nodes(graph: onnx.GraphProto, producer: dict[str, int]) -> list[int] | None:
    """Indices of the nodes the graph outputs depend on, in graph order (graphsurgeon's cleanup)."""
    seen: set[str] = set()
    used: set[int] = set()
    stack = [o.name for o in graph.output]
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        index = producer.get(name)
        if index is not None and index not in used:
            used.add(index)
            stack.extend(graph.node[index].input)
    return sorted(used)


def _level_order(graph: onnx.GraphProto, used: list[int], producer: dict[str, int]) -> list[int] | None:
    """graphsurgeon's toposort: each node's level is one more than its producers' highest; nodes are
    stably sorted by level, ties in the order a depth-first walk from each node (in graph order)
    first finished them."""
    level: dict[int, int] = {}  # insertion order is the finishing order
    for start in used:
        if start in level:
            continue
        on_path = {start}
        stack = [(start, iter(_producers(graph.node[start], producer)))]
        while stack:
            index, pending = stack[-1]
            child = next((c for c in pending if c not in level), None)
            if child is None:
                level[index] = 1 + max((level[c] for c in _producers(graph.node[index], producer)), default=-1)
                on_path.discard(index)
                stack.pop()
            elif child in on_path:
                return None
            else:
                on_path.add(child)
                stack.append((child, iter(_producers(graph.node[child], producer))))
    return sorted(level, key=level.__getitem__)


def _producers(node: onnx.NodeProto, producer: dict[str, int]) -> list[int]:
    """The nodes producing `node`'s inputs, first occurrence first."""
    found = [producer[t] for t in node.input if t in producer]
    return list(dict.fromkeys(found)) if len(found) > 1 else found


def _export(model: onnx.ModelProto, order: list[int], inputs: list, initializers: dict[str, int]) -> onnx.ModelProto:
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
    from onnx_graphsurgeon.importers.onnx_importer import OnnxImporter

    graph = model.graph
    out = onnx.ModelProto()
    target = out.graph
    target.name = graph.name
    if graph.doc_string:
        target.doc_string = graph.doc_string
    opset = OnnxImporter.get_opset(model)
    for index in order:
        node = graph.node[index]
        if _canonical(node):
            target.node.append(node)
        else:
            target.node.append(_reencoded(node, opset, model.opset_import, OnnxImporter, OnnxExporter))
    target.input.extend(OnnxExporter.export_value_info_proto(OnnxImporter.import_tensor(vi), False) for vi in inputs)
    target.output.extend(graph.output)  # replaced by the caller, as after graphsurgeon
    names = [vi.name for vi in inputs]
    names += [t for index in order for field in (graph.node[index].input, graph.node[index].output) for t in field]
    names += [o.name for o in graph.output]
    for name in dict.fromkeys(names):
        where = initializers.get(name)
        if where is not None:
            target.initializer.append(graph.initializer[where])
    return out


def _canonical(node: onnx.NodeProto) -> bool:
    """Whether graphsurgeon's re-encoding gives back exactly this node (a copy then does)."""
    fields = {f.name for f, _ in node.ListFields()}
    if not fields <= _NODE_FIELDS or "op_type" not in fields or (node.HasField("name") and not node.name):
        return False
    for attr in node.attribute:
        field = _VALUE_FIELD.get(attr.type)
        if field is None or {f.name for f, _ in attr.ListFields()} != {"name", "type", field}:
            return False
        if field == "t" and not attr.t.HasField("name"):
            return False  # graphsurgeon writes the (empty) name into the tensor
        if field in ("s", "strings"):
            try:
                [s.decode() for s in ([attr.s] if field == "s" else attr.strings)]
            except UnicodeDecodeError:
                return False
    return True


def _reencoded(node: onnx.NodeProto, opset, domains, importer, exporter) -> onnx.NodeProto:
    """The node as graphsurgeon exports it: attributes decoded and made again, unknown fields dropped."""
    attrs = importer.import_attributes(node.attribute, {}, {}, opset, domains)
    made = onnx.helper.make_node(node.op_type, inputs=list(node.input), outputs=list(node.output), name=node.name,
                                 domain=node.domain if node.HasField("domain") else None)
    made.attribute.extend(exporter.export_attributes(attrs))
    return made
