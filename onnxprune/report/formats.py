"""Reports: the JSON document pipelines read and the table people read."""

from __future__ import annotations

from pathlib import Path


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"


def _timing_label(report: dict) -> str:
    """Paired rounds (dense and pruned interleaved) or, for models run one at a time, separate runs."""
    return "latency (separate)" if report.get("latency_timing") == "separate" else "latency (paired)"


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
        lines.append(f"{_timing_label(report):18} {'':>12} {'':>12} {report['latency_ratio']:>8.3f}")
    lines.append(fidelity_line(report.get("fidelity", {})))
    if report.get("finetune"):
        lines.append(finetune_line(report["finetune"]))
    depth = report.get("depth")
    if depth:
        names = ", ".join(r["name"] for r in depth["removed"])
        lines.append(f"removed {len(depth['removed'])} of {depth['candidates']} residual {depth['unit']}s: {names}")
    plan = report.get("plan", {})
    if plan:
        lines.append(f"removed {plan['removed']} of {plan['channels']} channels in {plan['pruned_groups']} of "
                     f"{plan['groups']} groups")
        for h in plan.get("hidden", []):
            lines.append(f"hidden (residual-stream) width {h['before']} -> {h['after']}")
    if report.get("gates"):
        lines.append("gates: " + ", ".join(gate_text(g) for g in report["gates"]))
    return "\n".join(lines)


def finetune_line(tuned: dict) -> str:
    """What training did and which epoch was kept; the epochs the calibration guard refused, by number."""
    stop = {"nan": "; stopped: the loss became NaN", "time": "; stopped: time budget"}.get(tuned.get("stopped"), "")
    refused = [str(h["epoch"]) for h in tuned.get("history", []) if h.get("guard_refused")]
    guard = (f"; epoch{'s' if len(refused) > 1 else ''} {', '.join(refused)} ranked higher there but fit the "
             "calibration samples worse than epoch 0 (the guard)") if refused else ""
    others = tuned.get("other_outputs") or []
    also = f", {len(others)} other output{'s' if len(others) > 1 else ''} matched beside it" if others else ""
    return (f"fine-tuned {tuned['epochs']} epochs in ONNX Runtime ({tuned['loss']}{also}) on {tuned['samples']} samples, "
            f"kept epoch {tuned.get('best_epoch')} (best on held-out data; 0 = before training{guard}){stop}")


def fidelity_line(fid: dict) -> str:
    parts = [f"cosine {fid['cosine']:.6f}", f"max |diff| {fid['max_abs']:.3g}"]
    if "top1_agreement" in fid:
        parts.append(f"top-1 agreement {fid['top1_agreement']:.3f}")
    if "accuracy_dense" in fid:
        parts.append(f"accuracy {fid['accuracy_dense']:.4f} -> {fid['accuracy_pruned']:.4f}")
    line = f"fidelity on {fid.get('samples')} {fid.get('data', 'given')} samples: " + ", ".join(parts)
    per_output = [f"  output '{name}': cosine {o['cosine']:.6f}, max |diff| {o['max_abs']:.3g}"
                  for name, o in fid.get("outputs", {}).items()]
    return "\n".join([line, *per_output])


def gate_text(gate: dict) -> str:
    """`cosine 0.9871 >= 0.98 passed`."""
    return (f"{gate['name']} {gate['value']:.4f} {gate['comparison']} {gate['threshold']:g} "
            f"{'passed' if gate['passed'] else 'FAILED'}")


# --- Markdown summary (--summary) ---------------------------------------------------------------

def _md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def format_markdown(report: dict) -> str:
    """The report as Markdown for people: outcome, before/after, fidelity, gates, validation, plan."""
    gates = report.get("gates", [])
    missed = [g for g in gates if not g["passed"]]
    out = report.get("output")
    lines = ["# onnxprune report", "",
             f"- input: `{report.get('input', '?')}`",
             f"- output: `{out}`" if out else "- output: **not written** (a gate failed)" if missed
             else "- output: not written (library call)",
             f"- result: **{'gate failed' if missed else 'passed'}**"]
    options = {k: v for k, v in report.get("options", {}).items() if v not in (None, [], {}) and k != "input_shapes"}
    if options:
        lines.append("- options: " + ", ".join(f"{k} `{v}`" for k, v in options.items()))
    before, after = report.get("before", {}), report.get("after", {})
    rows = []
    for label, key in (("params", "params"), ("MACs", "macs"), ("size (bytes)", "size_bytes"),
                       ("latency p50 (ms)", "latency_ms")):
        if key in before and key in after:
            b, a = before[key], after[key]
            fmt = (lambda v: f"{v:.3f}") if key == "latency_ms" else _fmt
            rows.append([label, fmt(b), fmt(a), f"{a / b:.3f}" if b else "n/a"])
    if "latency_ratio" in report:
        rows.append([_timing_label(report), "", "", f"{report['latency_ratio']:.3f}"])
    lines += ["", "## Before and after", "", *_md_table(["", "dense", "pruned", "ratio"], rows)]
    fid = report.get("fidelity")
    if fid:
        frows = [["cosine", f"{fid['cosine']:.6f}"], ["relative L2", f"{fid.get('rel_l2', float('nan')):.4g}"],
                 ["max abs difference", f"{fid['max_abs']:.4g}"]]
        if "top1_agreement" in fid:
            frows.append(["top-1 agreement", f"{fid['top1_agreement']:.4f}"])
        if "accuracy_dense" in fid:
            drop = (fid["accuracy_dense"] - fid["accuracy_pruned"]) * 100
            frows.append(["accuracy", f"{fid['accuracy_dense']:.4f} -> {fid['accuracy_pruned']:.4f} "
                                      f"(drop {drop:.2f} points)"])
        frows += [[f"cosine of output `{name}`", f"{o['cosine']:.6f}"] for name, o in fid.get("outputs", {}).items()]
        lines += ["", f"## Fidelity ({fid.get('samples')} {fid.get('data', 'given')} samples)", "",
                  *_md_table(["figure", "value"], frows)]
    if gates:
        grows = [[g["name"], f"{g['comparison']} {g['threshold']:g}", f"{g['value']:.4f}",
                  "passed" if g["passed"] else "**FAILED**"] for g in gates]
        lines += ["", "## Gates", "", *_md_table(["gate", "threshold", "value", "result"], grows, "llrl")]
    validation = report.get("validation")
    if validation:
        lines += ["", "## Validation", ""]
        lines += [f"- {k}: {v if not isinstance(v, dict) else ', '.join(f'{a} {b}' for a, b in v.items())}"
                  for k, v in validation.items()]
    passes = report.get("passes")
    if passes:
        prow = [[str(i + 1), p["name"], "yes" if p["changed"] else "no", f"{p.get('seconds', 0):.2f}"]
                for i, p in enumerate(passes)]
        lines += ["", "## Passes", "", *_md_table(["#", "pass", "changed the model", "seconds"], prow, "rllr")]
    plan = report.get("plan")
    if plan:
        lines += ["", "## Plan", "",
                  f"Removed {plan['removed']} of {plan['channels']} channels in {plan['pruned_groups']} of "
                  f"{plan['groups']} groups.", ""]
        lines += [f"Hidden (residual-stream) width {h['before']} -> {h['after']}.\n" for h in plan.get("hidden", [])]
        grows = [[str(g["group"]), f"{g['kept']} / {g['channels']}", "yes" if g.get("frozen") else "",
                  ", ".join(f"`{s}`" for s in g.get("slots", [])[:2])]
                 for g in plan.get("per_group", []) if g["kept"] < g["channels"]]
        if grows:
            lines += _md_table(["group", "kept / channels", "frozen", "tensors"], grows, "rrll")
    return "\n".join(lines) + "\n"


# --- tables for the validate and bench commands --------------------------------------------------

def format_validation(result: dict) -> str:
    """The checks, the fidelity line and the gates of `onnxprune validate`."""
    v = result["validation"]
    providers = ", ".join(f"{k} {val}" for k, val in v.get("providers", {}).items())
    lines = [f"{'checker':18} {v['checker']}", f"{'shape inference':18} {v['shape_inference']}",
             f"{'onnxruntime':18} {providers or v['onnxruntime']}", f"{'interface':18} {v['interface']}",
             fidelity_line(result["fidelity"])]
    if result.get("gates"):
        lines.append("gates: " + ", ".join(gate_text(g) for g in result["gates"]))
    return "\n".join(lines)


def _labels(paths: list[str]) -> list[str]:
    names = [Path(p).name for p in paths]
    return names if len(set(names)) == len(names) else list(paths)


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:g} B"


def format_bench(result: dict, per_layer: bool = False) -> str:
    """Models as columns: cost, latency, throughput, memory, energy (and MACs per layer)."""
    models = result["models"]
    labels = _labels([m["path"] for m in models])
    width = max(12, *(len(l) for l in labels))
    rows: list[tuple[str, list[str]]] = [
        ("params", [_fmt(m["params"]) for m in models]),
        ("MACs / sample", [_fmt(m["macs"]) for m in models]),
        ("file size", [_bytes(m["size_bytes"]) for m in models]),
        ("latency p50 (ms)", [f"{m['latency_ms']['p50']:.3f}" for m in models]),
        ("latency p90 (ms)", [f"{m['latency_ms']['p90']:.3f}" for m in models]),
        ("vs first (paired)", [f"{m['latency_ratio']:.3f}" for m in models]),
        (f"samples/s @ batch {result['batch']}", [f"{m['throughput_per_s']:.1f}" if m["throughput_per_s"] else "n/a"
                                                  for m in models]),
        ("peak memory", [_bytes(m["memory"]["peak_bytes"]) if "peak_bytes" in m["memory"] else
                         "skipped" if m["memory"].get("skipped") else "n/a" for m in models]),
        ("energy (mJ/inf.)", [f"{m['energy']['mj_per_inference']:.3f}" if m["energy"].get("measurable") else
                              "not measurable" for m in models]),
    ]
    label_w = max(len(r[0]) for r in rows)
    lines = [f"{'':{label_w}}  " + "  ".join(f"{l:>{width}}" for l in labels)]
    lines += [f"{name:{label_w}}  " + "  ".join(f"{v:>{width}}" for v in values) for name, values in rows]
    notes = {f"peak memory: {m['memory']['method']}" for m in models if "method" in m["memory"]}
    notes |= {f"peak memory: {m['memory']['error']}" for m in models if "error" in m["memory"]}
    notes |= {f"energy: {m['energy'].get('reason') or m['energy'].get('method')}" for m in models}
    lines += [f"  {n}" for n in sorted(notes)]
    lines.append(f"  {result['rounds']} interleaved rounds after {result['warmup']} warm-up, "
                 f"threads {result['threads'] or 'default'}, {result['data']} inputs")
    if per_layer:
        lines += ["", format_layers(models, labels)]
    return "\n".join(lines)


def format_layers(models: list[dict], labels: list[str]) -> str:
    """MACs per linear node, aligned by node name across models (dense and pruned share names)."""
    order: list[tuple[str, str]] = []
    seen = set()
    for m in models:
        for row in m["layers"]:
            if row["node"] not in seen:
                seen.add(row["node"])
                order.append((row["node"], row["op"]))
    tables = [{r["node"]: r["macs"] for r in m["layers"]} for m in models]
    name_w = min(max([len(n) for n, _ in order] + [5]), 48)
    width = max(12, *(len(l) for l in labels))
    lines = [f"{'layer':{name_w}}  {'op':14}  " + "  ".join(f"{l:>{width}}" for l in labels)]
    for node, op in order:
        cells = [_fmt(t[node]) if node in t else "-" for t in tables]
        lines.append(f"{node[-name_w:]:{name_w}}  {op:14}  " + "  ".join(f"{c:>{width}}" for c in cells))
    lines.append(f"{'total':{name_w}}  {'':14}  " + "  ".join(f"{_fmt(m['macs']):>{width}}" for m in models))
    return "\n".join(lines)
