"""The residual stream (hidden width) through normalizations: opt-in, because it is approximate.

A LayerNorm or RMSNorm computes its statistics over the hidden axis, so removing a stream channel
changes them (mean and variance over fewer channels). With `ModelGraph.hidden` set (the `--hidden`
option, calibration data given) the normalized last axis is carried anyway: inputs, per-channel
parameters (scale, bias, embedding tables) and the outputs of the same width form one family. The
pruned norm then normalizes over the kept channels, as Minitron and SliceGPT do; the zero-channel
oracle compares against the dense model whose norms take their statistics over the kept channels
(check/stream_oracle.py). Without the flag every rule here is the barrier it was.

Each norm is one line of data in NORMS: which inputs are normalized data, which are per-channel
parameters, which outputs carry the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxprune.couple.ops.pool import PassAxes, _kept_by_reduction
from onnxprune.couple.vocabulary import Barrier, Link, Rule, Slot, dim, family, norm_axis, rank

MS = "com.microsoft"
OFF = "it normalizes over the hidden (residual-stream) width; pruning that width needs --hidden on (and calibration data)"


@dataclass(frozen=True)
class StreamNorm:
    """Inputs and outputs of a norm whose last axis is the hidden width (indices into the node)."""

    data: tuple[int, ...]
    params: tuple[int, ...]
    outputs: tuple[int, ...]


NORMS: dict[str, StreamNorm] = {
    "LayerNormalization": StreamNorm(data=(0,), params=(1, 2), outputs=(0,)),
    "SimplifiedLayerNormalization": StreamNorm(data=(0,), params=(1,), outputs=(0,)),
    f"{MS}.SimplifiedLayerNormalization": StreamNorm(data=(0,), params=(1,), outputs=(0,)),
    # input, skip, gamma, beta, bias -> output, mean, inv_std_var, input_skip_bias_sum
    f"{MS}.SkipLayerNormalization": StreamNorm(data=(0, 1), params=(2, 3, 4), outputs=(0, 3)),
    # input, skip, gamma, bias -> output, mean, inv_std_var, input_skip_bias_sum
    f"{MS}.SkipSimplifiedLayerNormalization": StreamNorm(data=(0, 1), params=(2, 3), outputs=(0, 3)),
    # ids, segment ids, word / position / segment tables, gamma, beta, mask, position ids -> output, mask index, sum
    f"{MS}.EmbedLayerNormalization": StreamNorm(data=(), params=(2, 3, 4, 5, 6), outputs=(0, 2)),
}


def norm_spec(node) -> StreamNorm:
    domain = node.proto.domain
    return NORMS[node.op if domain in ("", "ai.onnx") else f"{domain}.{node.op}"]


def stream_links(g, node, slot: Slot) -> list[Link]:
    """The hidden axis of every data input, parameter and stream output of a norm, as one family;
    a Barrier when hidden-width pruning is off or the norm spans more than the last axis."""
    if not g.hidden:
        raise Barrier(OFF)
    spec = norm_spec(node)
    if spec.data:
        x = node.inputs[spec.data[0]]
        r = rank(g, x)
        if norm_axis(int(node.attrs.get("axis", -1)), r) != r - 1:
            raise Barrier("it normalizes over more than the last axis")
    tensors = [node.input(i) for i in spec.data + spec.params]
    tensors += [node.outputs[i] for i in spec.outputs if i < len(node.outputs) and node.outputs[i]]
    tensors = [t for t in tensors if t and g.shape(t)]
    n = dim(g, tensors[-1] if not spec.data else node.inputs[spec.data[0]], -1)
    members = [Slot(t, rank(g, t) - 1) for t in tensors if dim(g, t, -1) == n]
    if Slot(slot.tensor, slot.axis) not in members:
        raise Barrier(f"'{slot.tensor}' axis {slot.axis} is not the hidden width of this norm")
    return family(members, n)


def is_stream_slot(g, node, slot: Slot) -> bool:
    """Whether `slot` is the normalized (last) axis of one of the norm's data, params or outputs."""
    shape = g.shape(slot.tensor)
    return shape is not None and slot.axis == len(shape) - 1


class EmbedNorm(Rule):
    """EmbedLayerNormalization: the embedding tables' width is the hidden width; nothing else passes."""

    ops = ("EmbedLayerNormalization",)
    domain = MS

    def links(self, g, node, slot):
        if not is_stream_slot(g, node, slot):
            raise Barrier("its token axes come from the ids and cannot shrink")
        return stream_links(g, node, slot)


class StreamReduce(PassAxes):
    """ReduceMean over the last axis, as exporters decompose LayerNorm and RMSNorm: with hidden-width
    pruning on, that axis is read (a mean over the kept channels) but carried nowhere."""

    def links(self, g, node, slot):
        x = node.inputs[0]
        if g.hidden and slot.tensor == x and slot.axis == rank(g, x) - 1 and slot.axis not in _kept_by_reduction(g, node) \
                and int(node.attrs.get("keepdims", 1)):
            return []
        return super().links(g, node, slot)


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (
    EmbedNorm(),
    StreamReduce(("ReduceMean",), _kept_by_reduction, "the op reduces over this axis"),
)
