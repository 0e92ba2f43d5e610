"""Masks for the schedules: magnitude masks, Erdős–Rényi densities, random masks, prune-and-regrow.

A mask is a bool array shaped like its weight (True = the connection exists). Counts are exact:
a layer at density d keeps round(d * size) weights, whatever ties the magnitudes hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from onnxprune.errors import BadInputError
from onnxprune.recover.schedules.layers import Layer

KINDS = ("conv", "linear")


def check_sparsity(sparsity: Mapping[str, float]) -> dict[str, float]:
    """{"conv": s, "linear": s} with every share in [0, 1) (BadInputError otherwise)."""
    unknown = sorted(set(sparsity) - set(KINDS))
    if unknown:
        raise BadInputError(f"sparsity is given per layer kind ({', '.join(KINDS)}), got {unknown}")
    out = {kind: float(sparsity.get(kind, 0.0)) for kind in KINDS}
    for kind, s in out.items():
        if not 0.0 <= s < 1.0:
            raise BadInputError(f"--{kind}-sparsity must be in [0, 1), got {s}")
    return out


def keep_count(size: int, density: float) -> int:
    """Weights a layer of `size` keeps at `density` (at least one: a layer is never emptied)."""
    return max(1, min(size, int(round(density * size))))


def top_k_mask(score: np.ndarray, k: int) -> np.ndarray:
    """True at the k largest entries of `score` (ties broken by position, deterministically)."""
    mask = np.zeros(score.size, dtype=bool)
    if k > 0:
        order = np.argsort(-score.reshape(-1), kind="stable")
        mask[order[:k]] = True
    return mask.reshape(score.shape)


def magnitude_mask(weight: np.ndarray, density: float) -> np.ndarray:
    """Keep the largest |w| (the weakest L1 connections are pruned)."""
    return top_k_mask(np.abs(weight), keep_count(weight.size, density))


def random_mask(shape: tuple[int, ...], density: float, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random mask with exactly round(density * size) connections."""
    size = int(np.prod(shape))
    mask = np.zeros(size, dtype=bool)
    mask[rng.choice(size, size=keep_count(size, density), replace=False)] = True
    return mask.reshape(shape)


def er_scale(shape: tuple[int, ...]) -> float:
    """Erdős–Rényi(-Kernel) density per unit epsilon: sum of the dims over their product.

    For a linear layer that is (n_in + n_out) / (n_in * n_out) (Mocanu et al. 2018); for a conv
    (n_out + n_in + k_h + k_w) / (n_out * n_in * k_h * k_w), the ERK generalisation (Evci et al. 2020).
    """
    return float(sum(shape)) / float(np.prod(shape))


def er_densities(layers: list[Layer], sparsity: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Per-layer densities epsilon * er_scale, capped at 1, with epsilon chosen per kind so each kind's
    weights are exactly `sparsity[kind]` sparse overall. Returns (densities, epsilon per kind).

    A layer whose density would exceed 1 is made dense and epsilon is solved again over the rest
    (the procedure of RigL's reference code).
    """
    sparsity = check_sparsity(sparsity)
    densities: dict[str, float] = {}
    epsilons: dict[str, float] = {}
    for kind in KINDS:
        members = [layer for layer in layers if layer.kind == kind]
        if not members:
            continue
        target = (1.0 - sparsity[kind]) * sum(layer.size for layer in members)
        dense: set[str] = set()
        while True:
            sparse = [layer for layer in members if layer.name not in dense]
            budget = target - sum(layer.size for layer in members if layer.name in dense)
            weight = sum(er_scale(layer.shape) * layer.size for layer in sparse)
            eps = budget / weight if weight > 0 else 0.0
            over = [layer for layer in sparse if eps * er_scale(layer.shape) > 1.0]
            if not over:
                break
            dense.add(max(over, key=lambda layer: er_scale(layer.shape)).name)
        epsilons[kind] = eps
        for layer in members:
            densities[layer.name] = 1.0 if layer.name in dense else eps * er_scale(layer.shape)
    return densities, epsilons


@dataclass
class Rewire:
    """What one prune-and-regrow step did to one layer."""

    pruned: int
    regrown: int
    regrown_index: np.ndarray   # flat indices of the new connections (their weights start at zero)


def prune_and_regrow(weight: np.ndarray, mask: np.ndarray, keep: int, regrow: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, Rewire]:
    """Cut the active connections with the smallest |w| down to `keep - regrow`, then add `regrow` random
    new ones; the layer ends with exactly `keep` connections.

    New connections are drawn among positions that were inactive before this step (a connection just
    cut is not grown back at once) and only fall back to the just-cut ones if there are too few.
    """
    active = int(mask.sum())
    survive = max(0, keep - regrow)
    if survive > active:
        raise BadInputError(f"cannot keep {survive} of {active} active weights")
    magnitude = np.where(mask, np.abs(weight), -1.0)  # inactive entries rank below every active one
    new = top_k_mask(magnitude, survive)
    cut = mask & ~new
    flat_new, flat_cut = new.reshape(-1), cut.reshape(-1)
    candidates = np.flatnonzero(~mask.reshape(-1))
    grow = min(keep - survive, int(flat_new.size - survive))
    if len(candidates) < grow:
        candidates = np.concatenate([candidates, np.flatnonzero(flat_cut)])
    chosen = rng.choice(candidates, size=grow, replace=False) if grow else np.zeros(0, dtype=np.int64)
    flat_new[chosen] = True
    return new, Rewire(pruned=int(cut.sum()), regrown=len(chosen), regrown_index=np.sort(chosen))
