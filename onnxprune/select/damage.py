"""Allocation by measured damage: how much each group hurts the model's outputs when pruned alone,
WITH its consumers re-solved, at a few shares; `select_by_sensitivity` then spends one damage
tolerance across groups and a target search bisects it.

Without recovery a group's damage says little about what remains after reconstruction: a redundant
group (its channels linear in each other) looks harmful but is almost free once the next layer
compensates. Each measurement re-solves the group's direct consumers on the calibration data (exact
for one group alone: their upstream is dense) and compares every graph output with the dense one; the
worst output counts, so a detector's few score channels are not hidden behind its box coordinates.
Curves are made monotone, so a larger tolerance never keeps a channel a smaller one removed: as the
target falls, plans only grow (no cliff followed by a recovery).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np

from onnxprune.load.data import Dataset
from onnxprune.couple.dependency import Dependency
from onnxprune.couple.plan import Plan
from onnxprune.select.allocate import channel_errors, combine
from onnxprune.select.plan import rounded_keep
from onnxprune.load.runtime import batchable, session
from onnxprune.recover.sequential import reconstruct

DAMAGE_RATIOS = (0.25, 0.5, 0.75)
DAMAGE_SAMPLES = 32


@contextmanager
def _quiet():
    log = logging.getLogger("onnxprune")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def output_drop(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """Worst 1 - cosine over the graph outputs (each output flattened over the samples)."""
    worst = 0.0
    for d, p in zip(reference, outputs):
        if not isinstance(d, np.ndarray) or d.dtype == object or not np.issubdtype(d.dtype, np.floating):
            continue
        d, p = d.reshape(-1).astype(np.float64), p.reshape(-1).astype(np.float64)
        denom = np.linalg.norm(d) * np.linalg.norm(p)
        cos = float(d @ p / denom) if denom > 0 else (1.0 if np.allclose(d, p) else 0.0)
        worst = max(worst, 1.0 - cos)
    return worst


def _run(sess, data: Dataset, batch_size: int = 16) -> list[np.ndarray]:
    chunks = [sess.run(None, feed) for feed in data.batches(batch_size, batchable(sess))]
    return [np.concatenate([np.asarray(c[i]).reshape(1, -1) if np.asarray(c[i]).ndim == 0 else np.asarray(c[i])
                            for c in chunks]) for i in range(len(chunks[0]))]


def group_damage(dep: Dependency, data: Dataset, scores: np.ndarray, ratios=DAMAGE_RATIOS,
                 samples: int = DAMAGE_SAMPLES, progress: bool = False) -> list[dict]:
    """Rows for `select_by_sensitivity`: per prunable group, 1 - damage at each share removed (lowest
    `scores` first), with the group's consumers re-solved."""
    from onnxprune.apply.rewrite import apply_plan

    data = data.take(samples)
    reference = _run(session(dep.graph.model), data)
    groups = [grp for grp in dep.groups if grp.prunable > 1]
    if progress:
        from tqdm import tqdm
        groups = tqdm(groups, desc="damage", leave=False)
    rows = []
    for grp in groups:
        free = grp.channels[~grp.frozen]
        order = free[np.argsort(scores[free], kind="stable")]
        row = {"group": grp.id, "channels": grp.size, "cosine": {}, "damage": {}, "channel_errors": {},
               "accuracy": {},
               "params": [s.tensor for s in grp.slots if s.tensor in dep.graph.constants][:3]}
        for r in ratios:
            drop = min(grp.size - rounded_keep(grp.size, r, 1), len(free))
            removed = np.zeros(dep.num_channels, dtype=bool)
            removed[order[:drop]] = True
            with _quiet():  # trial solves: their too-few-rows warnings would repeat per share
                overrides = reconstruct(dep, removed, data, direct_only=True)
            outputs = _run(session(apply_plan(Plan(dep, removed), overrides)), data)
            row["cosine"][r] = 1.0 - output_drop(reference, outputs)
            row["channel_errors"][r] = channel_errors(reference, outputs)
            row["damage"][r] = combine(row["channel_errors"][r])
        rows.append(row)
    return rows
