#!/usr/bin/env python3
"""Two configs over several seeds, from tools/diag_plan.py JSON files: a markdown table of each model's
per-seed scores and means, and a three-part rule for switching a default from config A to config B.

Configs are grouped by the prefix before their trailing digits (d0, d1, d2 -> d). Usage:

    python tools/seed_table.py docs/bench_issue9_s13_blend_*.json --a d --b b
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

TOL = 1e-9  # scores are floats from counts: ties must stay ties


def load(paths: list[str]) -> dict[str, dict]:
    """model -> {"dense": float, "runs": {prefix: [score by seed order]}}, from diag_plan JSON rows."""
    out: dict[str, dict] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text()):
            prefix = re.sub(r"\d+$", "", row["config"])
            entry = out.setdefault(row["model"], {"dense": row["dense"], "runs": {}})
            entry["runs"].setdefault(prefix, []).append(row["score"])
    return out


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def verdict(models: dict[str, dict], a: str, b: str, lower: set[str], wins_needed: int) -> tuple[list[str], bool]:
    """The rule's three parts as lines, and whether all hold. `lower`: models whose score falls as it improves."""
    sign = {m: -1.0 if m in lower else 1.0 for m in models}
    gain = {m: sign[m] * (mean(e["runs"][b]) - mean(e["runs"][a])) for m, e in models.items()}
    near = {c: sum(sign[m] * (mean(e["runs"][c]) - e["dense"]) >= -1.0 - TOL for m, e in models.items()) for c in (a, b)}
    at_least = sum(g >= -TOL for g in gain.values())
    worst = min(gain, key=gain.get)
    parts = [(at_least >= wins_needed, f"1. {b} >= {a} on {at_least} of {len(models)} models (needs {wins_needed})"),
             (gain[worst] >= -1.0 - TOL, f"2. largest loss of {b}: {-gain[worst]:.2f} points on {worst} (at most 1)"),
             (near[b] >= near[a], f"3. within 1 point of dense: {a} {near[a]}, {b} {near[b]} (must not fall)")]
    return [f"{'holds' if ok else 'FAILS'}: {text}" for ok, text in parts], all(ok for ok, _ in parts)


def table(models: dict[str, dict], a: str, b: str) -> str:
    lines = [f"| model | dense | {a}: seeds | {a}: mean | {b}: seeds | {b}: mean |", "|---|---|---|---|---|---|"]
    for m, e in models.items():
        ra, rb = e["runs"][a], e["runs"][b]
        lines.append(f"| {m} | {e['dense']:.1f} | {' / '.join(f'{x:.1f}' for x in ra)} | {mean(ra):.2f} | "
                     f"{' / '.join(f'{x:.1f}' for x in rb)} | {mean(rb):.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+")
    ap.add_argument("--a", default="d", help="config prefix of today's default")
    ap.add_argument("--b", default="b", help="config prefix of the candidate")
    ap.add_argument("--lower", default="ppocr_rec", help="comma list of models whose metric is lower-is-better (CER)")
    ap.add_argument("--wins", type=int, default=8, help="models on which the candidate must be at least as good")
    args = ap.parse_args()
    try:
        models = load(args.json)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable file, not JSON, not diag_plan rows
        print(f"error: cannot read the runs: {exc!r}", file=sys.stderr)
        return 2
    missing = [m for m, e in models.items() if args.a not in e["runs"] or args.b not in e["runs"]]
    if missing:
        print(f"error: no {args.a} or {args.b} runs for {', '.join(missing)}", file=sys.stderr)
        return 2
    print(table(models, args.a, args.b))
    lines, ok = verdict(models, args.a, args.b, set(args.lower.split(",")), args.wins)
    print("\n" + "\n".join(lines) + f"\n\nswitch: {'yes' if ok else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
