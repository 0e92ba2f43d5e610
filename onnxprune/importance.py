"""Channel importance: a score per channel, aggregated over every parameter of its group.

Each criterion is a small registered function `(dep, **options) -> scores[num_channels]`. Member
tensors are normalised by their mean so a wide layer does not outvote a narrow one; coupled layers
decide together because their contributions add up in the same channel.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .dependency import Dependency

Criterion = Callable[..., np.ndarray]
CRITERIA: dict[str, Criterion] = {}


def criterion(name: str):
    def register(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn
    return register


def parameter_slots(dep: Dependency):
    """(slot, array) for every floating-point constant that has a slot."""
    for slot in dep.slots:
        value = dep.graph.constants.get(slot.tensor)
        if value is not None and np.issubdtype(value.dtype, np.floating) and value.ndim >= 1:
            yield slot, value


def _per_index(value: np.ndarray, axis: int, p: int) -> np.ndarray:
    moved = np.moveaxis(np.abs(value.astype(np.float64)), axis, 0).reshape(value.shape[axis], -1)
    return (moved ** p).sum(axis=1)


def magnitude(dep: Dependency, p: int) -> np.ndarray:
    scores = np.zeros(dep.num_channels)
    for slot, value in parameter_slots(dep):
        if value.ndim == 1 and _is_statistic(dep, slot):
            continue
        v = _per_index(value, slot.axis, p)
        mean = v.mean()
        if mean > 0:
            np.add.at(scores, dep.elements(slot), v / mean)
    return scores ** (1.0 / p)


def _is_statistic(dep: Dependency, slot) -> bool:
    """BatchNorm running mean/variance describe the data, not the channel's weight."""
    for c in dep.graph.consumers.get(slot.tensor, []):
        node = dep.graph.nodes[c]
        if node.op == "BatchNormalization" and slot.tensor in node.inputs[3:5]:
            return True
    return False


@criterion("l1")
def l1(dep: Dependency, **_) -> np.ndarray:
    """Sum of |w| over every weight, bias and scale slice of the channel."""
    return magnitude(dep, 1)


@criterion("l2")
def l2(dep: Dependency, **_) -> np.ndarray:
    """Group L2 norm (Torch-Pruning's default criterion)."""
    return magnitude(dep, 2)


@criterion("random")
def random(dep: Dependency, seed: int = 0, **_) -> np.ndarray:
    """A baseline: uniform random scores."""
    return np.random.default_rng(seed).random(dep.num_channels)


def score(dep: Dependency, name: str, **options) -> np.ndarray:
    if name not in CRITERIA:
        from .errors import BadInputError
        raise BadInputError(f"unknown criterion '{name}'; choose one of {sorted(CRITERIA)}")
    return CRITERIA[name](dep, **options)
