"""The search's depth dimension: how many residual units a candidate removes before its width pruning.

Levels are shares of the model's removable units (graph/residual.py, the units `--depth` removes), so
they scale with the model: a third and two thirds of them (ShuffleNet's 13 units: 4 and 9; NudeNet's
6: 2 and 4). A model without removable units has no level, and its search is the search without the
dimension: the same candidates, none of them invalid.

Which units go is chosen by each candidate on the calibration data (select/depth.py), in its worker;
only the count is chosen here, from the graph alone, so the candidates depend on the model and the
seed, never on the executor. A level also says how much of the MACs it keeps at most: removing K
units takes away at least the MACs of the K cheapest, so a MACs target above that share would be
met by depth alone, a depth-only model under a width target's label; such pairs are not offered.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import onnx

from onnxprune.graph.cost import count_macs
from onnxprune.graph.fused_residual import unfuse
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.graph.residual import units
from onnxprune.load.fold import fold_constants
from onnxprune.load.model import load_model
from onnxprune.stages import as_dataset

DEPTH_SHARES = (1 / 3, 2 / 3)  # of the removable units


@dataclass(frozen=True)
class DepthLevel:
    """Remove `units` residual units; depth alone then keeps at most `macs_kept_most` of the MACs."""

    units: int
    macs_kept_most: float

    def allows(self, target_macs: float) -> bool:
        """Width pruning still has something to do at this MACs target."""
        return target_macs < self.macs_kept_most


def unit_macs(model: onnx.ModelProto, input_shapes: dict | None = None) -> tuple[list[int], int]:
    """MACs of each removable unit of `model`, as `--depth` finds them (after constant folding, fused
    residual normalizations split, as select/depth.py does), and the model's total."""
    unfused, _ = unfuse(fold_constants(model))
    g = ModelGraph(unfused, input_shapes)
    _, found = units(g)
    per_node = count_macs(g, per_node=True)
    return [sum(per_node.get(g.nodes[i].name, 0) for i in unit.nodes) for unit in found], sum(per_node.values())


def levels_from_units(macs: list[int], total: int, shares: tuple[float, ...] = DEPTH_SHARES) -> list[DepthLevel]:
    """One level per share of the units (at least one unit, distinct counts), none without units."""
    counts = sorted({min(len(macs), max(1, round(share * len(macs)))) for share in shares} if macs else set())
    cheapest = sorted(macs)
    return [DepthLevel(k, round(1.0 - sum(cheapest[:k]) / total, 6) if total else 1.0) for k in counts]


def depth_levels(model_path: str | os.PathLike, calib, input_shapes: dict | None = None) -> list[DepthLevel]:
    """The depth levels a search of `model_path` offers; `calib` gives the shapes of dynamic inputs
    when `input_shapes` does not, as it does for the candidates' own depth stage."""
    model = load_model(str(model_path))
    if input_shapes is None:
        data = as_dataset(calib, model)
        input_shapes = data.sample_shapes() if data is not None else None
    return levels_from_units(*unit_macs(model, input_shapes))
