"""The vocabulary op rules are written in: slots, links between their elements, barriers, updates.

A *slot* is one axis of one tensor. A *link* says which elements (indices) of two slots must be kept
or removed together. Rules only describe links; the dependency builder turns them into groups and
the rewrite applies the chosen removals, so neither of them branches on op types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from onnxprune.graph.model_graph import ModelGraph, Node
    from onnxprune.apply.rewrite import RewriteContext


class Slot(NamedTuple):
    """Axis `axis` (non-negative) of tensor `tensor`. A named tuple, not a dataclass: the dependency
    builder hashes and compares slots about 30 times per node (C-level for a tuple, a Python call
    for a frozen dataclass: a fifth of building the groups of a 30,000-node chain)."""

    tensor: str
    axis: int

    def __str__(self) -> str:
        return f"{self.tensor}[axis {self.axis}]"


@dataclass
class Link:
    """Element a[ia[k]] and element b[ib[k]] are one channel, for every k."""

    a: Slot
    b: Slot
    ia: np.ndarray
    ib: np.ndarray


@dataclass
class LinearSite:
    """Where a linear op reads a prunable input: y = W x (+ bias), contracting x's `x_axis` with
    W's `weight_axis`. `bias_index` is the node input that holds (or would hold) the bias, whose
    length is W's `weight_out_axis`. Recovery re-solves W and the bias from calibration data."""

    x: str
    x_axis: int
    weight: str
    weight_axis: int
    weight_out_axis: int
    bias: str | None
    bias_index: int | None


class Barrier(Exception):
    """Raised by a rule for a slot it cannot carry through its op; the message is the reason."""


# ---- link constructors -------------------------------------------------------------------------

def identity(a: Slot, b: Slot, n: int) -> Link:
    r = np.arange(n)
    return Link(a, b, r, r)


def offset(part: Slot, whole: Slot, n: int, start: int) -> Link:
    """part[i] is whole[start + i] (Concat inputs, Split outputs, Slice)."""
    r = np.arange(n)
    return Link(part, whole, r, r + start)


def indexed(a: Slot, b: Slot, ia: Iterable[int], ib: Iterable[int]) -> Link:
    return Link(a, b, np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64))


def merged(part: Slot, whole: Slot, sizes: tuple[int, ...], position: int) -> Link:
    """`whole` is the row-major merge of axes with `sizes`; `part` is the axis at `position`.

    Index i of `part` is tied to every element of `whole` whose digit at `position` is i: a block for
    the outermost axis (channels into Flatten, heads into a merged hidden axis), a stride otherwise.
    """
    elements = np.arange(int(np.prod(sizes))).reshape(sizes)
    by_part = np.moveaxis(elements, position, 0).reshape(sizes[position], -1)
    ia = np.repeat(np.arange(sizes[position]), by_part.shape[1])
    return Link(part, whole, ia, by_part.reshape(-1))


def family(slots: list[Slot], n: int) -> list[Link]:
    """Identity links tying every slot in `slots` (all of size n) to the first."""
    return [identity(slots[0], s, n) for s in slots[1:]]


# ---- rules -------------------------------------------------------------------------------------

class Rule:
    """How one op family ties the channels of its inputs and outputs.

    `links(g, node, slot)` returns the links that carry `slot` (one of the node's input or output
    axes) through the node, or raises Barrier with the reason it cannot. `seeds` names the slots a
    weight-bearing op makes prunable. `update` recomputes shape-carrying attributes and inputs
    after the rewrite sliced the tensors. `domain` is the operator set of `ops` ("" for standard
    ONNX, "com.microsoft" for ONNX Runtime's contrib ops).
    """

    ops: tuple[str, ...] = ()
    domain: str = ""

    def links(self, g: "ModelGraph", node: "Node", slot: Slot) -> list[Link]:
        raise Barrier(f"{node.op} has no channel mapping")

    def seeds(self, g: "ModelGraph", node: "Node") -> list[Slot]:
        return []

    def update(self, ctx: "RewriteContext", node: "Node") -> None:
        return None

    def linear_site(self, g: "ModelGraph", node: "Node") -> LinearSite | None:
        """For ops that compute W x: how their prunable input meets the weight (None otherwise)."""
        return None


def rank(g: "ModelGraph", tensor: str) -> int:
    shape = g.shape(tensor)
    if shape is None:
        raise Barrier(f"the shape of '{tensor}' is unknown")
    return len(shape)


def dim(g: "ModelGraph", tensor: str, axis: int) -> int:
    shape = g.shape(tensor)
    if shape is None:
        raise Barrier(f"the shape of '{tensor}' is unknown")
    return shape[axis]


def norm_axis(axis: int, r: int) -> int:
    return axis + r if axis < 0 else axis


def attr_or_input_ints(g: "ModelGraph", node: "Node", attr: str, input_index: int) -> list[int] | None:
    """An int list given as an attribute (older opsets) or a constant input (newer ones)."""
    if attr in node.attrs:
        return [int(v) for v in node.attrs[attr]]
    name = node.input(input_index)
    if name is None:
        return None
    values = g.static_ints(name)
    if values is None:
        raise Barrier(f"its input '{name}' is computed from run-time values")
    return values


Checker = Callable[["ModelGraph", "Node"], None]
