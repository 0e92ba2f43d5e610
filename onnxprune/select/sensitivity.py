"""Per-group sensitivity: prune one group alone at several shares and measure the fidelity drop."""

from __future__ import annotations

import logging

import numpy as np

from onnxprune.load.data import Dataset
from onnxprune.couple.dependency import Dependency
from onnxprune.score.criteria import score
from onnxprune.couple.plan import Plan
from onnxprune.select.plan import capped_keep, rounded_keep
from onnxprune.select.refine import least_widths
from onnxprune.apply.rewrite import RewriteError, apply_plan
from onnxprune.load.runtime import run_dataset, session

log = logging.getLogger("onnxprune")

DEFAULT_RATIOS = (0.25, 0.5, 0.75)


def _fidelity(reference: list[np.ndarray], outputs: list[np.ndarray], labels) -> tuple[float, float | None]:
    tensors = [i for i, x in enumerate(reference) if x.dtype != object]  # not sequences or maps (ZipMap)
    d = np.concatenate([reference[i].reshape(-1) for i in tensors]).astype(np.float64)
    p = np.concatenate([outputs[i].reshape(-1) for i in tensors]).astype(np.float64)
    cos = float(d @ p / max(np.linalg.norm(d) * np.linalg.norm(p), 1e-30))
    acc = None
    if labels is not None and reference[0].ndim == 2:
        acc = float((outputs[0].argmax(1) == labels).mean())
    return cos, acc


def group_sensitivity(dep: Dependency, data: Dataset, ratios=DEFAULT_RATIOS, criterion: str = "l2",
                      progress: bool = False) -> list[dict]:
    """One row per prunable group: cosine (and accuracy) of the model with only that group pruned."""
    scores = score(dep, criterion)
    dense = session(dep.graph.model)
    reference = run_dataset(dense, data)
    rows = []
    groups = [grp for grp in dep.groups if grp.prunable > 1]
    if progress:
        from tqdm import tqdm
        groups = tqdm(groups, desc="sensitivity", leave=False)
    for grp in groups:
        row = {"group": grp.id, "channels": grp.size, "params": [s.tensor for s in grp.slots
                                                                   if s.tensor in dep.graph.constants][:3],
               "cosine": {}, "accuracy": {}}
        free = grp.channels[~grp.frozen]
        order = free[np.argsort(scores[free], kind="stable")]
        for r in ratios:
            drop = min(grp.size - rounded_keep(grp.size, r, 1), len(free))
            removed = np.zeros(dep.num_channels, dtype=bool)
            removed[order[:drop]] = True
            try:
                pruned = session(apply_plan(Plan(dep, removed)))
            except RewriteError as exc:  # a cut no rewrite follows (a batch * heads shape): the group has no
                log.warning("sensitivity: group %d left out, it cannot be cut (%s)", grp.id, exc)  # row: kept whole
                break
            cos, acc = _fidelity(reference, run_dataset(pruned, data), data.labels)
            row["cosine"][r] = cos
            if acc is not None:
                row["accuracy"][r] = acc
        else:
            rows.append(row)
    return rows


def select_by_sensitivity(dep: Dependency, rows: list[dict], scores: np.ndarray, share: float, round_to: int = 1,
                          max_layer_ratio: float = 0.9, min_channels: int = 1) -> Plan:
    """Sensitivity-guided allocation: one tolerance for the fidelity drop, shared by every group.

    Each group is pruned as far as its own curve (1 - cosine when pruned alone, made monotone)
    stays within the tolerance, interpolating between the measured shares; `share` in [0, 1) maps to
    the tolerance (0: nothing removed, toward 1: every group at its most-pruned measured point), so a
    target search can bisect it. Within a group the lowest `scores` go first.
    """
    curves = {}
    for row in rows:
        ratios = np.array([0.0] + sorted(row["cosine"]))
        drops = np.maximum.accumulate(np.array([0.0] + [1.0 - row["cosine"][r] for r in sorted(row["cosine"])]))
        curves[row["group"]] = (ratios, drops)
    if share <= 0:
        return Plan(dep, np.zeros(dep.num_channels, dtype=bool), {"ratio": 0.0, "scope": "sensitivity"})
    top = max((d[-1] for _, d in curves.values()), default=0.0)
    tolerance = share * top
    removed = np.zeros(dep.num_channels, dtype=bool)
    least = least_widths(dep, max_layer_ratio, min_channels)
    for grp in dep.groups:
        if grp.id not in curves or grp.prunable == 0:
            continue
        ratios, drops = curves[grp.id]
        reachable = ratios[drops <= tolerance + 1e-15]
        ratio = min(float(reachable.max()) if len(reachable) else 0.0, max_layer_ratio)
        below = drops[drops > tolerance]
        if len(below) and len(reachable):  # interpolate toward the first point past the tolerance
            i = len(reachable)
            if i < len(ratios) and drops[i] > drops[i - 1]:
                t = (tolerance - drops[i - 1]) / (drops[i] - drops[i - 1])
                ratio = min(ratios[i - 1] + t * (ratios[i] - ratios[i - 1]), max_layer_ratio)
        if ratio <= 0:
            continue
        keep = capped_keep(dep, grp, ratio, round_to, least[grp.id], min_channels)
        free = grp.channels[~grp.frozen]
        drop = min(grp.size - keep, len(free))
        if drop > 0:
            removed[free[np.argsort(scores[free], kind="stable")[:drop]]] = True
    return Plan(dep, removed, {"ratio": share, "round_to": round_to, "scope": "sensitivity", "tolerance": tolerance})


def format_sensitivity(rows: list[dict]) -> str:
    if not rows:
        return "no prunable groups"
    ratios = list(rows[0]["cosine"])
    head = f"{'group':>5} {'channels':>8}  " + "  ".join(f"cos@{r:<5}" for r in ratios)
    if rows[0]["accuracy"]:
        head += "  " + "  ".join(f"acc@{r:<5}" for r in ratios)
    lines = [head + "  parameters"]
    for row in sorted(rows, key=lambda r: r["cosine"][ratios[len(ratios) // 2]]):
        line = f"{row['group']:>5} {row['channels']:>8}  " + "  ".join(f"{row['cosine'][r]:<9.5f}" for r in ratios)
        if row["accuracy"]:
            line += "  " + "  ".join(f"{row['accuracy'][r]:<9.4f}" for r in ratios)
        lines.append(line + "  " + ", ".join(row["params"]))
    return "\n".join(lines)


def plot_sensitivity(rows: list[dict], path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from onnxprune.errors import BadInputError
        raise BadInputError("plots need matplotlib: pip install 'onnxprune[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        ratios = list(row["cosine"])
        ax.plot(ratios, [1 - row["cosine"][r] for r in ratios], marker="o", alpha=0.6, label=f"group {row['group']}")
    ax.set_xlabel("share of the group's channels removed")
    ax.set_ylabel("1 - cosine to the dense outputs")
    ax.set_yscale("log")
    ax.set_title("Per-group pruning sensitivity")
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    import io

    from onnxprune.load.files import write_bytes_atomic
    buf = io.BytesIO()  # written through the output guard: atomic, or straight into a pipe
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(buf.getvalue(), path)
