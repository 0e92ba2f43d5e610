"""Coupled channel groups, built from the op rules.

Starting from the slots weight-bearing ops make prunable, each slot is carried through the nodes
that touch it by their rules; the links collected tie elements (slot, index) together. A connected
set of elements is one *channel*: it is kept or removed as a whole. Channels that appear in exactly
the same slots form a *group*, the unit that importance, ratios and rounding apply to. A slot that
a rule cannot carry (a barrier), or that is a graph input or output, freezes every channel in it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from onnxprune.graph.model_graph import ModelGraph
from onnxprune.couple.ops import rule_for, Barrier, Link, Slot


@dataclass
class Freeze:
    """Why a slot cannot lose channels: the node and op that stopped it, and the reason."""

    slot: Slot
    node: str
    op: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.op} '{self.node}'" if self.node else self.op
        return f"{where}: {self.reason} ({self.slot})"


@dataclass
class Group:
    """Channels that live in exactly the same slots and are pruned together."""

    id: int
    slots: list[Slot]
    channels: np.ndarray            # channel ids, ordered by their first element
    frozen: np.ndarray              # bool per channel
    freezes: list[Freeze] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.channels)

    @property
    def prunable(self) -> int:
        return int((~self.frozen).sum())


@dataclass
class Dependency:
    """The coupling of a model: slots, their elements' channel labels, groups and barriers."""

    graph: ModelGraph
    slots: list[Slot]
    slot_index: dict[Slot, int]
    offsets: np.ndarray            # first element id of each slot (plus a final total)
    labels: np.ndarray             # channel id of every element
    channel_frozen: np.ndarray     # bool per channel
    groups: list[Group]
    channel_group: np.ndarray      # group id per channel
    freezes: list[Freeze]
    notes: list[str] = field(default_factory=list)  # what the analysis could not look at, and why

    def elements(self, slot: Slot) -> np.ndarray:
        """Channel id of each index of `slot`."""
        i = self.slot_index[slot]
        return self.labels[self.offsets[i]:self.offsets[i + 1]]

    def slot_size(self, slot: Slot) -> int:
        i = self.slot_index[slot]
        return int(self.offsets[i + 1] - self.offsets[i])

    @property
    def num_channels(self) -> int:
        return len(self.channel_frozen)

    def kept_indices(self, removed: np.ndarray) -> dict[Slot, np.ndarray]:
        """For each slot that loses elements, the sorted indices it keeps."""
        # in whole-array passes (a numpy call per slot took a second on 100,000-node graphs)
        gone = np.asarray(removed, dtype=bool)[self.labels]  # per element
        sizes = np.diff(self.offsets)
        slot_of = np.repeat(np.arange(len(self.slots)), sizes)
        touched = np.zeros(len(self.slots), dtype=bool)
        touched[slot_of[gone]] = True
        keep = ~gone & touched[slot_of]
        within = (np.arange(len(gone)) - self.offsets[slot_of])[keep]  # index inside its slot
        which = np.flatnonzero(touched)
        pieces = np.split(within, np.cumsum(np.bincount(slot_of[keep], minlength=len(self.slots))[which])[:-1])
        return {self.slots[i]: piece for i, piece in zip(which.tolist(), pieces)}


def build_dependency(g: ModelGraph, hidden: bool = False) -> Dependency:
    """Carry every seed slot through the graph and group the resulting channels; `hidden` lets the
    residual-stream width pass through norms (couple/ops/stream.py)."""
    g.hidden = hidden
    builder = _Builder(g)
    for node in g.nodes:
        rule = rule_for(node)
        if rule is None:
            continue
        try:
            seeds = rule.seeds(g, node)
        except Barrier:
            continue
        for seed in seeds:
            builder.close_over(seed)  # one seed's closure at a time: later seeds see earlier slots
    return builder.finish()


class _Builder:
    def __init__(self, g: ModelGraph):
        self.g = g
        self.slots: dict[Slot, int] = {}
        self.links: list[Link] = []
        self.freezes: list[Freeze] = []
        self.visited: set[tuple[int, Slot]] = set()
        self.interface = set(g.inputs) | set(g.outputs)
        self.skipped: list[Slot] = []  # seeds whose tensor shape is unknown

    def close_over(self, seed: Slot) -> None:
        if self.g.shape(seed.tensor) is None:
            self.skipped.append(seed)
            return
        seed = self._normalize(seed)
        if seed is None or seed in self.slots:
            return
        stack = [seed]
        self._add_slot(seed)
        while stack:
            slot = stack.pop()
            for node_index in self._touching(slot.tensor):
                if (node_index, slot) in self.visited:
                    continue
                for new in self._carry(node_index, slot):
                    stack.append(new)

    def _normalize(self, slot: Slot) -> Slot | None:
        shape = self.g.shape(slot.tensor)
        if shape is None:
            return None
        axis = slot.axis + len(shape) if slot.axis < 0 else slot.axis
        if not 0 <= axis < len(shape) or shape[axis] <= 1:
            return None
        return slot if axis == slot.axis else Slot(slot.tensor, axis)  # most are: no new tuple

    def _touching(self, tensor: str) -> list[int]:
        nodes = list(self.g.consumers.get(tensor, []))
        producer = self.g.producer.get(tensor)
        if producer is not None and self.g.nodes[producer].op != "Constant":
            nodes.insert(0, producer)
        return nodes

    def _add_slot(self, slot: Slot) -> None:
        self.slots[slot] = len(self.slots)
        if slot.tensor in self.interface:
            kind = "input" if slot.tensor in self.g.inputs else "output"
            self.freezes.append(Freeze(slot, "", f"graph {kind}", "the model's interface keeps its shape"))
        if self.g.shape(slot.tensor) is None:
            self.freezes.append(Freeze(slot, "", "shape", "the tensor's shape is unknown"))

    def _carry(self, node_index: int, slot: Slot) -> list[Slot]:
        node = self.g.nodes[node_index]
        self.visited.add((node_index, slot))
        rule = rule_for(node)
        if rule is None:
            domain = f"{node.proto.domain}." if node.proto.domain not in ("", "ai.onnx") else ""
            self.freezes.append(Freeze(slot, node.name, domain + node.op, "no pruning rule for this op"))
            return []
        try:
            links = rule.links(self.g, node, slot)
        except Barrier as barrier:
            self.freezes.append(Freeze(slot, node.name, node.op, str(barrier)))
            return []
        touched = {s for link in links for s in (link.a, link.b)}
        if links and slot not in touched:
            self.freezes.append(Freeze(slot, node.name, node.op, "the rule does not carry this axis"))
            return []
        new = []
        for link in links:
            a, b = self._normalize(link.a), self._normalize(link.b)
            if a is None or b is None:
                unknown = [s for s, n in ((link.a, a), (link.b, b)) if n is None and self.g.shape(s.tensor) is None
                           and (s.tensor in self.g.consumers or s.tensor in self.interface)]  # unread: harmless
                known = [n for n in (a, b) if n is not None]
                if unknown and known:  # never drop a coupling silently: keep the known side whole
                    self.freezes.append(Freeze(known[0], node.name, node.op,
                                               f"the shape of '{unknown[0].tensor}' is unknown"))
                continue
            for s in (a, b):
                self.visited.add((node_index, s))
                if s not in self.slots:
                    self._add_slot(s)
                    new.append(s)
            self.links.append(Link(a, b, link.ia, link.ib))
        return new

    def finish(self) -> Dependency:
        slots = list(self.slots)
        sizes = np.array([self.g.shape(s.tensor)[s.axis] for s in slots], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        index = self.slots
        total = int(offsets[-1])
        labels = connected_labels(total, _element_ids(self.links, "a", index, offsets),
                                  _element_ids(self.links, "b", index, offsets))
        # channel ids in order of first appearance
        _, first, labels = np.unique(labels, return_index=True, return_inverse=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        labels = rank[labels]
        num = len(order)
        slot_of_element = np.repeat(np.arange(len(slots)), sizes)
        frozen = np.zeros(num, dtype=bool)
        for f in self.freezes:
            if f.slot in index:
                i = index[f.slot]
                frozen[labels[offsets[i]:offsets[i + 1]]] = True
        groups, channel_group = _group_channels(labels, slot_of_element, slots, frozen, self.freezes, index, offsets)
        return Dependency(self.g, slots, index, offsets, labels, frozen, groups, channel_group, self.freezes,
                          self._notes())

    def _notes(self) -> list[str]:
        notes = list(self.g.problems)
        if self.skipped:
            notes.append(f"{len(self.skipped)} weight-bearing slot(s) not analysed because their shapes are unknown, "
                         f"e.g. {self.skipped[0]}")
        for index in self.g.subgraph_nodes:
            node = self.g.nodes[index]
            notes.append(f"{node.op} '{node.name}' has subgraphs that are not analysed; the tensors they read keep "
                         "their width")
        return notes


def _element_ids(links: list[Link], side: str, index: dict[Slot, int], offsets: np.ndarray) -> np.ndarray:
    """Element id of each linked index on one side ("a" or "b") of every link, in one pass (a numpy
    addition per link cost more than the rest of the grouping on 100,000-node graphs)."""
    if not links:
        return np.zeros(0, np.int64)
    within = [getattr(link, "i" + side) for link in links]
    starts = offsets[[index[getattr(link, side)] for link in links]]
    return np.concatenate(within).astype(np.int64, copy=False) + np.repeat(starts, [len(i) for i in within])


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by one sort (numpy 2's hash-based np.unique took 0.6 s on 600,000 distinct keys)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _group_channels(labels, slot_of_element, slots, frozen, freezes, index, offsets):
    """Channels with the same set of slots form one group (in linear passes: one 1-D sort of
    channel-slot keys, then one short tuple per channel)."""
    num = len(frozen)
    width = max(len(slots), 1)
    keys = _sorted_unique(labels.astype(np.int64) * width + slot_of_element)
    channel_of, slot_list = keys // width, (keys % width).tolist()
    starts = np.flatnonzero(np.r_[True, channel_of[1:] != channel_of[:-1]]).tolist() if len(keys) else []
    bounds = dict(zip(channel_of[starts].tolist(), zip(starts, starts[1:] + [len(slot_list)])))
    by_signature: dict[tuple[int, ...], list[int]] = {}
    for c in range(num):
        start, stop = bounds.get(c, (0, 0))
        by_signature.setdefault(tuple(slot_list[start:stop]), []).append(c)
    channel_group = np.zeros(num, dtype=np.int64)
    groups = []
    slot_freezes: dict[int, list[Freeze]] = defaultdict(list)
    for f in freezes:
        if f.slot in index:
            slot_freezes[index[f.slot]].append(f)
    for gid, (signature, chans) in enumerate(sorted(by_signature.items(), key=lambda kv: kv[1][0])):
        chans = np.array(chans, dtype=np.int64)
        channel_group[chans] = gid
        group_freezes = [f for s in signature for f in slot_freezes.get(s, [])]
        groups.append(Group(gid, [slots[s] for s in signature], chans, frozen[chans].copy(), group_freezes))
    return groups, channel_group


def connected_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of n elements under the pairs (a[k], b[k]): a label per element.

    Hook-and-compress in numpy: each round points every pair at its smaller root and then jumps
    pointers until they settle; rounds shrink geometrically, so big graphs stay fast.
    """
    parent = np.arange(n, dtype=np.int64)
    if len(a) == 0:
        return parent
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    while True:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            return parent
        ra, rb = ra[differ], rb[differ]
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        np.minimum.at(parent, hi, lo)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        a, b = a[differ], b[differ]
