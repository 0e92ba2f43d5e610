"""Run the training graph's convolutions on ONNX Runtime's blocked-layout (NCHWc) kernels.

ORT converts a Conv to its fast NCHWc form only when the weight is a constant initializer: it
reorders the filter once when the session is built. In a training graph the weights are inputs
that change every step, so every Conv fell back to the generic im2col kernel (1.2-2.7x slower here
on the digits CNN's and ResNet-18's layers). This pass writes the NCHWc form itself, with the filter
reordered inside the graph (a Reshape and a Transpose of the weight, a few KB per step):

    x -> ReorderInput -> nchwc.Conv(reordered W, B[, activation]) -> ReorderOutput -> y

The filter layout is ORT's (MlasReorderFilterOIHWBiBo: [O/b][I/b][kh][kw][b_in][b_out]; with fewer
input channels than a block, the input stays NCHW and the filter is OIHWBo). The block size b
depends on the CPU (8 with AVX2, 16 with AVX-512), so it is read from ORT itself by optimizing a
one-Conv probe model. The pass is ORT-specific and CPU-specific: it is applied to the model a
training session runs, never to a model that is saved.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from typing import Collection

import numpy as np
import onnx
from onnx import helper, numpy_helper

NCHWC = "com.microsoft.nchwc"


@functools.lru_cache(maxsize=1)
def block_size() -> int:
    """ORT's NCHWc block size on this CPU; 0 when ORT does not use NCHWc kernels here."""
    import onnxruntime as ort
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "probe", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as folder:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = os.path.join(folder, "probe.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(opts.optimized_model_filepath)
    if not any(n.domain == NCHWC for n in optimized.graph.node):
        return 0
    return int(optimized.graph.initializer[0].dims[0])  # one output channel, padded to a block


FEED_PLAIN = True  # generic Convs read numpy-made flipped / tap filters too (see lower_convs_fed)
MIN_POSITIONS = 512  # output positions (batch included) per filter element for the reorder to pay


@dataclass(frozen=True)
class FedFilter:
    """A reordered filter the caller computes with numpy and feeds (see `fill_filter`)."""

    weight: str                # the trained weight (a graph input) it is made from
    plan: str                  # "blocked" or "nchw" (NCHWc layouts), "plain" (a generic Conv's filter as is)
    flipped: bool              # an input-gradient Conv's filter: channel axes swapped, spatial axes reversed
    shape: tuple[int, ...]     # the Conv's filter shape
    taps: tuple[tuple[int, ...], ...] | None = None  # a sub-pixel phase's filter: these taps per axis, swapped


def lower_convs(model: onnx.ModelProto, batch: int = 0, block: int | None = None) -> onnx.ModelProto:
    """`model` with every 2-D, group-1 Conv whose weight is computed or fed at run time (not an
    initializer) in NCHWc form, the filter reordered in the graph; see `lower_convs_fed`."""
    return lower_convs_fed(model, batch, (), block)[0]


def lower_convs_fed(model: onnx.ModelProto, batch: int, fed: Collection[str],
                    block: int | None = None) -> tuple[onnx.ModelProto, dict[str, FedFilter]]:
    """`model` with every 2-D, group-1 Conv whose weight is computed or fed at run time (not an
    initializer) in NCHWc form; other Convs are left to ORT. Returns `model` itself when none fit.

    A Conv reading one of the `fed` graph inputs, or the flipped copy or a sub-pixel phase's taps of
    one that `rules/conv_gemm` makes for input gradients, reads its reordered filter from a new graph
    input instead; the returned dict says how to fill each (numpy reorders 5-8x faster than ORT's
    Transpose and Slice). Convs left on the generic kernel get their flipped or tap filters fed too
    ("plain": ORT's 4-D Transpose and negative-step Slice took 90 ms per step on ResNet-18's 512x512
    input-gradient filters, numpy a few).

    Reordering the filter costs about as much per element as 50-100 multiply-adds, so a Conv with
    few output positions per filter element (ResNet-18's 4x4 stage at batch 16: 256) is left on the
    generic kernel, 2.4x faster there; `batch` (0: unknown) counts into the positions."""
    block = block_size() if block is None else block
    if block <= 1:
        return model, {}
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.input) if v.type.HasField("tensor_type")}
    constants = {i.name for i in model.graph.initializer}
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(model.graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(index)
    outputs = {o.name for o in model.graph.output}
    producers = {o: n for n in model.graph.node for o in n.output}
    ints = {i.name: numpy_helper.to_array(i).tolist() for i in model.graph.initializer
            if i.data_type == onnx.TensorProto.INT64}
    derived: dict[str, FedFilter] = {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, fused, changed = [], set(), False
    for index, node in enumerate(model.graph.node):
        if index in fused:
            continue
        w_shape = shapes.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        plan = _plan(node, w_shape, constants, block)
        out_shape = shapes.get(node.output[0]) if plan else None
        if plan and batch and (not out_shape or None in out_shape[2:]
                               or batch * int(np.prod(out_shape[2:])) < MIN_POSITIONS):
            plan = None
        source = _fed_source(node.input[1], set(fed), producers, ints) if node.op_type == "Conv" else None
        if FEED_PLAIN and plan is None and source is not None and source[1:] != (False, None) and None not in w_shape:
            # a generic Conv reading a filter computed from a weight: numpy makes it, not ORT's Transpose
            feed = _feed_name(source)
            derived[feed] = FedFilter(source[0], "plain", source[1], tuple(w_shape), source[2])
            plain = onnx.NodeProto()
            plain.CopyFrom(node)
            plain.input[1] = feed
            nodes.append(plain)
            changed = True
            continue
        if plan is None:
            nodes.append(node)
            continue
        relu = _fusable_relu(model, node, readers, outputs)
        if relu is not None:
            fused.add(relu)
            relu = model.graph.node[relu]
        feed = None
        if source is not None:
            feed = _feed_name(source)
            derived[feed] = FedFilter(source[0], plan, source[1], tuple(w_shape), source[2])
        nodes.extend(_lowered(node, plan, w_shape, relu, block, feed))
        changed = True
    if not changed:
        return model, {}
    del out.graph.node[:]
    out.graph.node.extend(_live(nodes, outputs))
    for name, spec in derived.items():
        if name not in {i.name for i in out.graph.input}:
            out.graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(spec.shape)))
    if not any(o.domain == NCHWC for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(NCHWC, 1))
    return out, derived


def _feed_name(source: tuple[str, bool, tuple | None]) -> str:
    weight, flipped, taps = source
    if taps is not None:
        return f"{weight}::taps_" + "_".join("".join(map(str, t)) for t in taps)
    return f"{weight}::nchwc" + ("_flipped" if flipped else "")


def source_filter(spec: FedFilter, weight: np.ndarray) -> np.ndarray:
    """The filter (O, I, kh, kw) the Conv reads, as a view of (or, for phase taps, a copy from) `weight`."""
    if spec.taps is not None:  # a view where the taps are a progression (9 ns per element copied, 2 as a view)
        rows, cols = (_taps_slice(t) for t in spec.taps)
        if isinstance(rows, slice) and isinstance(cols, slice):
            return weight[:, :, rows, cols].transpose(1, 0, 2, 3)
        return weight[:, :, list(spec.taps[0])][:, :, :, list(spec.taps[1])].transpose(1, 0, 2, 3)
    return weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1] if spec.flipped else weight


def _taps_slice(taps: tuple[int, ...]) -> slice | None:
    """The taps (a sub-pixel phase's step by -stride) as a slice; None when they are no progression."""
    if len(taps) == 1:
        return slice(taps[0], taps[0] + 1)
    step = taps[1] - taps[0]
    if step == 0 or any(b - a != step for a, b in zip(taps, taps[1:])):
        return None
    stop = taps[-1] + step
    return slice(taps[0], None if stop < 0 else stop, step)


def fill_filter(spec: FedFilter, weight: np.ndarray, out: np.ndarray, block: int | None = None) -> None:
    """Write `weight`'s filter for `spec` into `out` (spec.shape, float32), in ORT's blocked layout for
    the NCHWc plans."""
    w = source_filter(spec, weight)
    if spec.plan == "plain":
        np.copyto(out, w)
        return
    b = block_size() if block is None else block
    o, i, kh, kw = spec.shape
    if spec.plan == "blocked":
        blocked = w.reshape(o // b, b, i // b, b, kh, kw).transpose(0, 2, 4, 5, 3, 1)
        np.copyto(out.reshape(o // b, i // b, kh, kw, b, b), blocked)
    else:
        np.copyto(out.reshape(o // b, i, kh, kw, b), w.reshape(o // b, b, i, kh, kw).transpose(0, 2, 3, 4, 1))


def _fed_source(name: str, fed: set[str], producers: dict, ints: dict) -> tuple[str, bool, tuple | None] | None:
    """(weight, flipped, taps) when the Conv filter `name` is a fed weight, its flipped copy
    (Slice(Transpose(weight, [1, 0, 2, 3]), starts -1, steps -1 on axes 2 and 3)) or a sub-pixel
    phase's filter (Transpose(Gather(Gather(weight, taps, axis 2), taps, axis 3), [1, 0, 2, 3]))."""
    if name in fed:
        return name, False, None
    swap = producers.get(name)
    if swap is not None and swap.op_type == "Transpose" and _perm(swap) == [1, 0, 2, 3]:
        taps = _gathered_taps(swap.input[0], fed, producers, ints)
        if taps is not None:
            return taps[0], False, taps[1]
    flip = swap
    if flip is None or flip.op_type != "Slice" or len(flip.input) != 5:
        return None
    if [ints.get(t) for t in (flip.input[1], flip.input[3], flip.input[4])] != [[-1, -1], [2, 3], [-1, -1]]:
        return None
    swap = producers.get(flip.input[0])
    if swap is None or swap.op_type != "Transpose" or swap.input[0] not in fed:
        return None
    return (swap.input[0], True, None) if _perm(swap) == [1, 0, 2, 3] else None


def _perm(node: onnx.NodeProto) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def _gathered_taps(name: str, fed: set[str], producers: dict, ints: dict) -> tuple[str, tuple] | None:
    """(weight, (taps along axis 2, taps along axis 3)) for Gather(Gather(weight, ., axis 2), ., axis 3)."""
    taps = {}
    for axis in (3, 2):
        gather = producers.get(name)
        if gather is None or gather.op_type != "Gather" or ints.get(gather.input[1]) is None:
            return None
        if next((a.i for a in gather.attribute if a.name == "axis"), 0) != axis:
            return None
        taps[axis] = tuple(ints[gather.input[1]])
        name = gather.input[0]
    return (name, (taps[2], taps[3])) if name in fed else None


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """`nodes` without those whose outputs nothing reads (the flips the fed filters replaced)."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    return kept[::-1]


def _plan(node: onnx.NodeProto, w_shape, constants: set[str], block: int) -> str | None:
    """'blocked' (input reordered too), 'nchw' (few input channels: input stays NCHW) or None."""
    if not w_shape or len(w_shape) != 4 or None in w_shape or node.input[1] in constants:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if int(attrs.get("group", 1)) != 1 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != list(w_shape[2:]):
        return None
    if w_shape[0] % block:
        return None
    channels = w_shape[1]
    if channels % block == 0:
        return "blocked"
    return "nchw" if channels < block else None


def _fusable_relu(model: onnx.ModelProto, node: onnx.NodeProto, readers: dict[str, list[int]],
                  outputs: set[str]) -> int | None:
    """Index of the Relu that alone reads this Conv's output (fused into the NCHWc Conv)."""
    y = node.output[0]
    users = readers.get(y, [])
    if y in outputs or len(users) != 1:
        return None
    user = model.graph.node[users[0]]
    return users[0] if user.op_type == "Relu" and user.domain in ("", "ai.onnx") else None


def _lowered(node: onnx.NodeProto, plan: str, w_shape: list[int], relu: onnx.NodeProto | None,
             block: int, feed: str | None) -> list[onnx.NodeProto]:
    x, w = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 else ""
    out_channels, channels, kh, kw = w_shape
    tag = node.output[0]
    made: list[onnx.NodeProto] = []

    def emit(op, inputs, domain="", output=None, **attrs):
        name = output or f"{tag}/nchwc/{op}{len(made)}"
        made.append(helper.make_node(op, inputs, [name], name=f"{tag}/nchwc/{op}{len(made)}", domain=domain,
                                     **attrs))
        return name

    def shape(values):
        name = f"{tag}/nchwc/shape{len(made)}"
        made.append(helper.make_node("Constant", [], [name], name=name,
                                     value=numpy_helper.from_array(np.asarray(values, np.int64))))
        return name

    blocks = out_channels // block
    conv_in = emit("ReorderInput", [x], domain=NCHWC, channels_last=0) if plan == "blocked" else x
    if feed is not None:
        filt = feed
    elif plan == "blocked":  # [O, I, kh, kw] -> [O/b, b, I/b, b, kh, kw] -> [O/b, I/b, kh, kw, b_in, b_out]
        split = emit("Reshape", [w, shape([blocks, block, channels // block, block, kh, kw])])
        filt = emit("Reshape", [emit("Transpose", [split], perm=[0, 2, 4, 5, 3, 1]), shape(w_shape)])
    else:  # few input channels: [O/b, b, I, kh, kw] -> [O/b, I, kh, kw, b_out], input stays NCHW
        split = emit("Reshape", [w, shape([blocks, block, channels, kh, kw])])
        filt = emit("Reshape", [emit("Transpose", [split], perm=[0, 2, 3, 4, 1]), shape(w_shape)])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "auto_pad"}
    attrs["kernel_shape"] = [kh, kw]
    if relu is not None:
        attrs["activation"] = "Relu"
    conv = emit("Conv", [conv_in, filt] + ([bias] if bias else []), domain=NCHWC, **attrs)
    emit("ReorderOutput", [conv], domain=NCHWC, output=(relu or node).output[0], channels_last=0,
         channels=out_channels)
    return made
