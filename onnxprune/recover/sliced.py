"""Dense-shaped constants cut as the rewrite cuts them, without rewriting the model.

Sequential reconstruction swaps re-solved weights into segments of the already pruned model; the
values it swaps in must be sliced exactly as `apply_plan` slices constants (each kept-slot cut in turn).
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency


def constant_cuts(dep: Dependency, removed: np.ndarray) -> dict[str, list[tuple[int, np.ndarray]]]:
    """For each constant the plan slices, its (axis, kept indices) cuts in the rewrite's order."""
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for slot, idx in dep.kept_indices(removed).items():
        if slot.tensor in dep.graph.constants:
            out.setdefault(slot.tensor, []).append((slot.axis, idx))
    return out


def sliced(value: np.ndarray, cuts) -> np.ndarray:
    """`value` with each (axis, kept indices) cut applied."""
    for axis, idx in cuts:
        value = np.take(value, idx, axis=axis)
    return value


def cut_into(names, overrides: dict, replace, cuts: dict, move: bool) -> None:
    """Each named value of `overrides` into `replace`, cut as the pruned model holds it; `move` drops the
    dense one (handed over cut, never held dense and cut at once: each weight has one consumer)."""
    for name in names:
        if name in overrides:
            replace[name] = sliced(overrides.pop(name) if move else overrides[name], cuts.get(name, ()))
