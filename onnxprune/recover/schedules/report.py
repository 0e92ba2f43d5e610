"""The comparison as a table for people (Markdown-compatible) and as a PNG (matplotlib, optional)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from onnxprune.load.files import write_bytes_atomic

# (header, row key, format) in table order: the columns are data, the formatter is generic
COLUMNS = (
    ("schedule", "title", "{}"),
    ("acc %", "accuracy", "pct"),
    ("Δ pts", "accuracy_delta", "delta"),
    ("conv sp", "sparsity.conv", "pct0"),
    ("linear sp", "sparsity.linear", "pct0"),
    ("nonzero params", "params_nonzero", "count"),
    ("params", "params", "count"),
    ("MACs (dense kernels)", "macs", "count"),
    ("nonzero MACs", "macs_nonzero", "count"),
    ("zip KB", "zip_bytes", "kb"),
    ("latency ms", "latency_ms", "{:.4f}"),
    ("× dense", "latency_ratio", "{:.2f}"),
    ("energy µJ", "energy_uj", "energy"),
    ("ideal µJ", "energy_ideal_uj", "{:.3f}"),
)


def _get(row: dict, key: str):
    value = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def _cell(value, fmt: str, row: dict) -> str:
    if value is None:
        return "-"
    if fmt == "pct":
        return f"{100 * value:.2f}"
    if fmt == "pct0":
        return f"{100 * value:.1f}%"
    if fmt == "delta":
        return f"{100 * value:+.2f}"
    if fmt == "count":
        return _count(value)
    if fmt == "kb":
        return f"{value / 1024:.1f}"
    if fmt == "energy":
        return f"{value:.2f}" + ("*" if row.get("energy_kind") == "estimate" else "")
    return fmt.format(value)


def format_compare(report: dict) -> str:
    """A Markdown table of the rows, then the energy method and the notes."""
    header = [c[0] for c in COLUMNS]
    lines = [[_cell(_get(row, key), fmt, row) for _, key, fmt in COLUMNS] for row in report["rows"]]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))) + " |"
            for line in lines]
    opts = report["options"]
    out.append("")
    start = f"re-initialised ({opts['reinit']})" if opts["reinit"] else "from the given weights"
    out.append(f"{opts['epochs']} epochs per schedule, sparsity conv {opts['sparsity']['conv']:.0%} / linear "
               f"{opts['sparsity']['linear']:.0%}, {start}, zeta {opts['zeta']:g} ({opts['zeta_decay']}), "
               f"seed {opts['train']['seed']}; accuracy on {opts['eval_samples']} samples; latency at batch "
               f"{opts['batch']}, median of {opts['rounds']} interleaved rounds of {opts['repeat']} runs.")
    energy = report["energy"]
    out.append(("* " if energy["kind"] == "estimate" else "") + "Energy: " + energy["note"] + ".")
    out.extend(report["notes"])
    return "\n".join(out)


def plot_compare(report: dict, path: str | os.PathLike) -> Path:
    """Four panels: accuracy, zipped size, latency and energy per schedule (estimates hatched)."""
    from matplotlib.figure import Figure

    rows = report["rows"]
    titles = [r["title"] for r in rows]
    colors = ["#718096" if r["schedule"] == "dense" else ("#2f855a" if r["structured"] else "#2b6cb0") for r in rows]
    fig = Figure(figsize=(11, 7))
    axes = fig.subplots(2, 2).reshape(-1)
    panels = (("accuracy (%)", [100 * (r["accuracy"] or 0) for r in rows]),
              ("zipped size (KB)", [r["zip_bytes"] / 1024 for r in rows]),
              ("latency (ms, median, interleaved)", [r["latency_ms"] for r in rows]),
              ("energy per inference (µJ)" + (", ESTIMATE" if report["energy"]["kind"] == "estimate" else ", RAPL"),
               [r["energy_uj"] for r in rows]))
    y = np.arange(len(rows))
    for ax, (label, values) in zip(axes, panels):
        bars = ax.barh(y, values, color=colors)
        if "ESTIMATE" in label:
            for b in bars:
                b.set_hatch("//")
        ax.set_yticks(y, titles, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(label, fontsize=9)
        if label.startswith("accuracy"):
            low = min(values)
            ax.set_xlim(max(0.0, low - 5.0), 100.0)
        for yi, v in zip(y, values):
            ax.text(v, yi, f" {v:.3g}", va="center", fontsize=7)
    opts = report["options"]
    fig.suptitle(f"Pruning schedules: conv {opts['sparsity']['conv']:.0%} / linear {opts['sparsity']['linear']:.0%} "
                 f"sparsity, {opts['epochs']} epochs (blue: unstructured, green: channels)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    write_bytes_atomic(buf.getvalue(), path)
    return Path(path)
