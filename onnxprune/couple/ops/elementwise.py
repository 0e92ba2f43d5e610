"""Element-wise ops: every output element depends only on the same element of each (broadcast) input."""

from __future__ import annotations

from onnxprune.couple.vocabulary import Barrier, Link, Rule, Slot, dim, identity, rank

UNARY = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs",
    "Sign", "Floor", "Ceil", "Round", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh",
    "Acosh", "Atanh", "Not", "IsNaN", "IsInf", "Identity", "Cast", "CastLike", "Shrink",
)
BROADCASTING = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Mod", "PRelu", "Where", "Equal",
    "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "BitShift", "BitwiseAnd",
    "BitwiseOr", "BitwiseXor",
)


class Elementwise(Rule):
    """Output axis a is tied to the aligned axis of every data input that is not broadcast there.

    `data_inputs` lists the inputs that broadcast with the output (None: all of them); the others
    (Clip's min/max, Dropout's ratio) are scalars that never carry channels.
    """

    def __init__(self, ops: tuple[str, ...], data_inputs: tuple[int, ...] | None = None):
        self.ops = ops
        self.data_inputs = data_inputs

    def _inputs(self, node) -> list[str]:
        idx = range(len(node.inputs)) if self.data_inputs is None else self.data_inputs
        return [node.inputs[i] for i in idx if i < len(node.inputs) and node.inputs[i]]

    def links(self, g, node, slot: Slot) -> list[Link]:
        out = node.outputs[0]
        out_rank = rank(g, out)
        inputs = self._inputs(node)
        if slot.tensor == out:
            out_axis = slot.axis
        elif slot.tensor in inputs:
            out_axis = slot.axis + out_rank - rank(g, slot.tensor)
        elif slot.tensor in node.outputs:  # secondary outputs (Dropout's mask) follow the first
            out_axis = slot.axis
        else:
            raise Barrier(f"input '{slot.tensor}' of {node.op} is a parameter, not data")
        n = dim(g, out, out_axis)
        links = []
        for t in inputs:
            in_axis = out_axis - (out_rank - rank(g, t))
            if in_axis >= 0 and dim(g, t, in_axis) == n:
                links.append(identity(Slot(t, in_axis), Slot(out, out_axis), n))
        for extra in node.outputs[1:]:
            if extra and g.shape(extra) == g.shape(out):
                links.append(identity(Slot(extra, out_axis), Slot(out, out_axis), n))
        return links


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (
    Elementwise(UNARY, data_inputs=(0,)),
    Elementwise(BROADCASTING),
    Elementwise(("Clip",), data_inputs=(0,)),
    Elementwise(("Dropout",), data_inputs=(0,)),
)
