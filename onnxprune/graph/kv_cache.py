"""A decoder's KV cache taken out of its interface for pruning, and put back with the pruned shapes.

A GenAI-builder graph reads `past_key_values.N.key/value` and writes `present.N.key/value`: the cache
holds `kv_num_heads` heads per layer, so as graph inputs and outputs they would freeze the KV heads,
and they keep every layer's attention alive (a layer whose cache is an output is never a removable
block). A model folder's runtime sizes the cache from its config, so for a folder the cache is not a
fixed interface: `strip` empties the attention ops' past inputs (the prompt pass: no past) and drops
the cache from the graph's inputs and outputs; the pruned model gets it back from `restore`, one
input and output pair per attention op still there, numbered 0..L-1 in graph order as the runtime's
name templates (`past_key_values.%d.key`) expect, with the head count each op now has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import onnx

CACHE_OPS = {"GroupQueryAttention": (3, 4, 1, 2), "MultiHeadAttention": (6, 7, 1, 2)}  # past k, v; present k, v


@dataclass
class Cache:
    """Where the cache was: the graph inputs and outputs as they were (by name) and the name templates."""

    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    past: tuple[str, str] = ("past_key_values.%d.key", "past_key_values.%d.value")
    present: tuple[str, str] = ("present.%d.key", "present.%d.value")

    @property
    def empty(self) -> bool:
        return not self.inputs and not self.outputs


def _attention(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in CACHE_OPS and n.domain == "com.microsoft"]


def _template_index(name: str, template: str) -> int | None:
    pattern = "^" + re.escape(template).replace("%d", r"(\d+)") + "$"
    found = re.match(pattern, name)
    return int(found.group(1)) if found else None


def strip(model: onnx.ModelProto, past: tuple[str, str] | None = None,
          present: tuple[str, str] | None = None) -> tuple[onnx.ModelProto, Cache]:
    """A copy of `model` without the cache in its interface, and where the cache was."""
    cache = Cache()
    cache.past, cache.present = past or cache.past, present or cache.present
    names_in = {n.input[i] for n in _attention(model) for i in CACHE_OPS[n.op_type][:2] if i < len(n.input) and n.input[i]}
    names_out = {n.output[i] for n in _attention(model) for i in CACHE_OPS[n.op_type][2:] if i < len(n.output)}
    if not names_in and not names_out & {o.name for o in model.graph.output}:
        return model, cache
    out = onnx.ModelProto()
    out.CopyFrom(model)
    cache.inputs = [i for i in model.graph.input if i.name in names_in]
    cache.outputs = [o for o in model.graph.output if o.name in names_out]
    for node in _attention(out):
        for i in CACHE_OPS[node.op_type][:2]:
            if i < len(node.input):
                node.input[i] = ""
    _keep(out.graph.input, [i for i in out.graph.input if i.name not in names_in])
    _keep(out.graph.output, [o for o in out.graph.output if o.name not in names_out])
    return out, cache


def _keep(field_, items) -> None:
    """Replace a repeated proto field's items by copies of `items` (copied first: they may be its own)."""
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copies.append(copy)
    del field_[:]
    field_.extend(copies)


def heads(node: onnx.NodeProto) -> tuple[int, int]:
    """(query heads, KV heads) of an attention op."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return int(attrs.get("num_heads", 0)), int(attrs.get("kv_num_heads", attrs.get("num_heads", 0)))


def restore(model: onnx.ModelProto, cache: Cache) -> onnx.ModelProto:
    """`model` (pruned from strip's output) with the cache back in its interface, renumbered."""
    if cache.empty:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    layers = _attention(out)
    by_index = {}
    for vi in cache.inputs + cache.outputs:
        for k, template in enumerate((*cache.past, *cache.present)):
            index = _template_index(vi.name, template)
            if index is not None:
                by_index[(k, index)] = vi
    inputs, outputs = [], []
    for layer, node in enumerate(layers):
        past_k, past_v, present_k, present_v = CACHE_OPS[node.op_type]
        kv = heads(node)[1]
        for k, (position, template) in enumerate(zip((past_k, past_v, present_k, present_v), (*cache.past, *cache.present))):
            name = template % layer
            if k < 2:
                while len(node.input) <= position:
                    node.input.append("")
                node.input[position] = name
            else:
                node.output[position] = name
            proto = by_index.get((k, layer)) or by_index.get((k, 0))
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(proto)
            vi.name = name
            dims = vi.type.tensor_type.shape.dim
            if len(dims) == 4:
                dims[1].Clear()
                dims[1].dim_value = kv
            (inputs if k < 2 else outputs).append(vi)
    order = {(k, i): n for n, (k, i) in enumerate(sorted(by_index, key=lambda key: _position(cache, key)))}
    inputs.sort(key=lambda vi: _rank(vi.name, cache, order))
    outputs.sort(key=lambda vi: _rank(vi.name, cache, order))
    out.graph.input.extend(inputs)
    out.graph.output.extend(outputs)
    return out


def _position(cache: Cache, key: tuple[int, int]) -> int:
    """Where the cache tensor `key` (kind, layer) stood in the original interface."""
    names = [vi.name for vi in cache.inputs + cache.outputs]
    kind, layer = key
    return names.index((*cache.past, *cache.present)[kind] % layer)


def _rank(name: str, cache: Cache, order: dict) -> int:
    for k, template in enumerate((*cache.past, *cache.present)):
        index = _template_index(name, template)
        if index is not None:
            return order.get((k, index), len(order) + index)
    return len(order)
