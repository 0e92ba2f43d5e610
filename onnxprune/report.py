"""Reports: the JSON document pipelines read and the table people read."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_json_atomic(data: dict, path: str | os.PathLike) -> None:
    write_text_atomic(json.dumps(data, indent=2, sort_keys=False) + "\n", path)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write via a temporary file in the same folder and a rename: never a half-written file."""
    write_bytes_atomic(text.encode("utf-8"), path)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"


def format_summary(report: dict) -> str:
    """A before/after table of params, MACs, size, latency and fidelity."""
    before, after = report["before"], report["after"]
    rows = [("params", "params"), ("MACs", "macs"), ("size (bytes)", "size_bytes"), ("latency p50 (ms)", "latency_ms")]
    lines = [f"{'':18} {'dense':>12} {'pruned':>12} {'ratio':>8}"]
    for label, key in rows:
        if key in before and key in after:
            b, a = before[key], after[key]
            ratio = a / b if b else float("nan")
            fmt = (lambda v: f"{v:.3f}") if key == "latency_ms" else _fmt
            lines.append(f"{label:18} {fmt(b):>12} {fmt(a):>12} {ratio:>8.3f}")
    if "latency_ratio" in report:
        lines.append(f"{'latency (paired)':18} {'':>12} {'':>12} {report['latency_ratio']:>8.3f}")
    fid = report.get("fidelity", {})
    parts = [f"cosine {fid['cosine']:.6f}", f"max |diff| {fid['max_abs']:.3g}"]
    if "top1_agreement" in fid:
        parts.append(f"top-1 agreement {fid['top1_agreement']:.3f}")
    if "accuracy_dense" in fid:
        parts.append(f"accuracy {fid['accuracy_dense']:.4f} -> {fid['accuracy_pruned']:.4f}")
    lines.append(f"fidelity on {fid.get('samples')} {fid.get('data')} samples: " + ", ".join(parts))
    plan = report.get("plan", {})
    if plan:
        lines.append(f"removed {plan['removed']} of {plan['channels']} channels in {plan['pruned_groups']} of "
                     f"{plan['groups']} groups")
    return "\n".join(lines)
