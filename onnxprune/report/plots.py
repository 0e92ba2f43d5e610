"""PNG figures for people (`--plot DIR`): kept channels per group and per layer.

matplotlib is an optional extra (`pip install 'onnxprune[plot]'`); `require_matplotlib()` is called
before any work so a missing extra is a one-line usage error (exit 2), not a crash at the end.
Figures are drawn on matplotlib's object API (no pyplot state) and written atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import onnx

from onnxprune.errors import BadInputError
from onnxprune.load.files import write_bytes_atomic

INSTALL_HINT = "pip install 'onnxprune[plot]'"


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise BadInputError(f"--plot needs matplotlib, an optional extra: {INSTALL_HINT}") from None


def check_plot_dir(directory: str | os.PathLike) -> None:
    """Usage errors for `--plot DIR`, raised before any work: no matplotlib, or DIR is a file."""
    require_matplotlib()
    if Path(directory).exists() and not Path(directory).is_dir():
        raise BadInputError(f"--plot {directory}: exists and is not a folder")


def layer_widths(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """Output channels of every node with a constant weight: {node name: (op, width)}."""
    consts = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    consts[node.output[0]] = tuple(attr.t.dims)
    widths = {}
    for i, node in enumerate(model.graph.node):
        name = node.name or (node.output[0] if node.output else f"node{i}")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        w = consts.get(node.input[1]) if len(node.input) > 1 else None
        if w is None or not w:
            continue
        if node.op_type == "Conv":
            widths[name] = (node.op_type, int(w[0]))
        elif node.op_type == "ConvTranspose":
            widths[name] = (node.op_type, int(w[1]) * int(attrs.get("group", 1)))
        elif node.op_type == "Gemm":
            widths[name] = (node.op_type, int(w[0] if attrs.get("transB", 0) else w[-1]))
        elif node.op_type == "MatMul" and len(w) >= 2:
            widths[name] = (node.op_type, int(w[-1]))
    return widths


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    write_bytes_atomic(buf.getvalue(), path)
    return path


def plot_groups(plan: dict, path: Path) -> Path:
    """Horizontal bars: channels per coupled group, kept over total."""
    from matplotlib.figure import Figure

    groups = plan["per_group"]
    labels = [f"g{g['group']} {(g.get('slots') or [''])[0]}"[:40] for g in groups]
    total = np.array([g["channels"] for g in groups])
    kept = np.array([g["kept"] for g in groups])
    fig = Figure(figsize=(8, 1.2 + 0.28 * len(groups)))
    ax = fig.subplots()
    y = np.arange(len(groups))
    ax.barh(y, total, color="#d9d9d9", label="channels")
    ax.barh(y, kept, color="#2b6cb0", label="kept")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("channels")
    ax.set_title(f"Kept channels per group ({plan['removed']} of {plan['channels']} removed)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_layers(dense: onnx.ModelProto, pruned: onnx.ModelProto, path: Path) -> Path | None:
    """Bars per weighted layer: output channels before and after (None if no layer has a weight)."""
    from matplotlib.figure import Figure

    before, after = layer_widths(dense), layer_widths(pruned)
    names = [n for n in before if n in after]
    if not names:
        return None
    fig = Figure(figsize=(8, 1.2 + 0.28 * len(names)))
    ax = fig.subplots()
    y = np.arange(len(names))
    ax.barh(y, [before[n][1] for n in names], color="#d9d9d9", label="dense")
    ax.barh(y, [after[n][1] for n in names], color="#2f855a", label="pruned")
    ax.set_yticks(y, [f"{n[-34:]} ({before[n][0]})" for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("output channels")
    ax.set_title("Output channels per layer")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def write_plots(report: dict, directory: str | os.PathLike, dense: onnx.ModelProto | str | os.PathLike | None = None,
                pruned: onnx.ModelProto | None = None) -> list[Path]:
    """kept_channels.png (from the report's plan) and layer_channels.png (when both models are given;
    `dense` may be a path)."""
    check_plot_dir(directory)
    if dense is not None and not isinstance(dense, onnx.ModelProto):
        dense = onnx.load(str(dense), load_external_data=False)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if report.get("plan", {}).get("per_group"):
        written.append(plot_groups(report["plan"], directory / "kept_channels.png"))
    if dense is not None and pruned is not None:
        layers = plot_layers(dense, pruned, directory / "layer_channels.png")
        if layers is not None:
            written.append(layers)
    return written
