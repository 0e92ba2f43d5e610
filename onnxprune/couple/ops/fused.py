"""ONNX Runtime's fused normalizations and activations (com.microsoft, as its transformer optimizer and
ONNX Runtime GenAI's builder write them).

The LayerNorm family normalizes over the hidden (residual-stream) width: removing an entry changes
the statistics of the others, so that axis is a barrier unless hidden-width pruning is on
(couple/ops/stream.py, which also holds EmbedLayerNormalization). Leading axes pass through. The
fused activations are element-wise with a broadcast bias, so their channels pass as in Add.
"""

from __future__ import annotations

from onnxprune.couple.ops.elementwise import Elementwise
from onnxprune.couple.ops.stream import stream_links
from onnxprune.couple.vocabulary import Barrier, Rule, Slot, dim, family, norm_axis, rank

MS = "com.microsoft"
HIDDEN = ("it normalizes over the hidden (residual-stream) width; pruning that width needs --hidden on "
          "(and calibration data)")


class HiddenNorm(Rule):
    """(Skip)(Simplified)LayerNormalization: axes before `axis` (default the last) pass through the
    data inputs and every output of the same rank (right-aligned); the normalized axes are barriers."""

    def __init__(self, ops: tuple[str, ...], data_inputs: tuple[int, ...], domain: str = MS):
        self.ops = ops
        self.data_inputs = data_inputs
        self.domain = domain

    def links(self, g, node, slot):
        x = node.inputs[0]
        r = rank(g, x)
        start = norm_axis(int(node.attrs.get("axis", -1)), r)
        data = [node.inputs[i] for i in self.data_inputs if node.input(i)]
        data += [o for o in node.outputs if o and g.shape(o) is not None and len(g.shape(o)) == r]
        if slot.tensor in data:
            axis = slot.axis + r - rank(g, slot.tensor)
            if axis < start:
                n = dim(g, x, axis)
                members = [Slot(t, axis - r + rank(g, t)) for t in data
                           if axis - r + rank(g, t) >= 0 and dim(g, t, axis - r + rank(g, t)) == n]
                return family(members, n)
        if g.hidden:  # the residual stream, opt-in (couple/ops/stream.py)
            return stream_links(g, node, slot)
        raise Barrier(HIDDEN)


class FusedElementwise(Elementwise):
    domain = MS


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (
    HiddenNorm(("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"), data_inputs=(0, 1)),
    HiddenNorm(("SimplifiedLayerNormalization",), data_inputs=(0,)),
    HiddenNorm(("SimplifiedLayerNormalization",), data_inputs=(0,), domain=""),  # ORT also registers it there
    FusedElementwise(("BiasGelu", "FastGelu", "BiasAdd")),
    FusedElementwise(("Gelu", "QuickGelu"), data_inputs=(0,)),
)
