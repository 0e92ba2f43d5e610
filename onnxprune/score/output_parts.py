"""Output parts of equal weight for fisher's probes (issue 9, item 4: per-output fidelity).

fisher divides each output row (index along axis 1) by its standard deviation, so every row of one
output weighs alike. That is not enough when a model's outputs are measured in different units: a
YOLO head's 4 box rows are pixels whose spread over anchors is mostly the anchors' positions (~90 px
on a 320 px input), its class rows probabilities whose spread on unlabelled data is ~1e-4; two graph
outputs (boxes, scores) or an output with many more rows than another have the same problem. Then
one part's first-order damage is orders of magnitude below the other's and the ranking ignores it.

A *part* is one graph output's rows of one scale: rows sorted by standard deviation are split where
consecutive rows differ by more than PART_GAP (a softmax's rare and common classes stay within it:
magika's 214 rows never differ by more than 10x from one to the next). With more than one part, every (sample, probe) runs
one backward pass per part, the probe zero outside it, so each channel's damage E[s_c,p^2] is known
per part; each part's is divided by its total over the removable channels, T_p = sum_c E[s_c,p^2]
(times the mean total, to keep the units), so every part weighs the same in the sum, and within a
part the rows keep fisher's per-row standardisation. Costs one backward pass per part. A model of
one part (one output of one scale: every classifier and recognizer measured) scores exactly as before.
"""

from __future__ import annotations

import logging
import numpy as np

log = logging.getLogger("onnxprune.score.output_parts")

PART_GAP = 1000.0    # rows whose standard deviations differ by more than this factor are different units


def parts(stds: dict[str, np.ndarray], floor: float = 0.0) -> list[tuple[str, np.ndarray]]:
    """(output, row indices) of every part: per output, its rows grouped by scale (module docstring).
    Rows at or under `floor` times their output's largest std are constant on the data (fisher floors
    them): they join the smallest-scale part instead of making one of their own."""
    out = []
    for name, std in stds.items():
        constant = std <= floor * float(std.max()) * (1 + 1e-6)
        varying = np.flatnonzero(~constant)
        if len(varying) == 0:
            out.append((name, np.arange(len(std))))
            continue
        order = varying[np.argsort(std[varying], kind="stable")]
        cuts = np.flatnonzero(np.diff(np.log10(std[order])) > np.log10(PART_GAP)) + 1
        groups = np.split(order, cuts)
        groups[0] = np.concatenate([groups[0], np.flatnonzero(constant)])
        out.extend((name, np.sort(rows)) for rows in groups)
    return out


def part_mask(std: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """1 on the part's rows, 0 elsewhere: multiplies a probe row-wise."""
    mask = np.zeros_like(std)
    mask[rows] = 1.0
    return mask


def free_channels(dep) -> np.ndarray:
    """Channels a plan may remove (not frozen): only their damage counts toward a part's total."""
    free = np.zeros(dep.num_channels, bool)
    for grp in dep.groups:
        free[grp.channels[~grp.frozen]] = True
    return free


def part_weights(found: list, damage: list[np.ndarray], free: np.ndarray) -> np.ndarray:
    """One weight per part, mean(T) / T_p with T_p = damage[p] summed over the free channels, so each
    part's weighted total is the same; one part, or a part nothing removable moves: weight 1."""
    totals = np.array([float(d[free].sum()) for d in damage])
    if len(found) <= 1 or not (totals > 0).any():
        return np.ones(len(damage))
    ref = float(totals[totals > 0].mean())
    log.info("fisher: %d output parts of different scales, total damage %s: each weighed alike",
             len(found), ", ".join(f"{n}[{len(r)} rows] {t:.3g}" for (n, r), t in zip(found, totals)))
    return np.where(totals > 0, ref / np.where(totals > 0, totals, 1.0), 1.0)
