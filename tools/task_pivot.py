#!/usr/bin/env python3
"""One Markdown table from tools/bench_tasks.py JSON files: a row per model, a column per config, each
cell the scores at the levels asked ("s1 / s2"); then, per config, how many models stay within 1 and
within 3 points of dense at each level, its mean rank among the configs (1 = best; per model and
level, ties share the better rank) and its mean points lost over the models every config ran. Usage:

    python tools/task_pivot.py docs/bench_a.json,docs/bench_b.json --levels 0.8,0.5 [--configs a,b]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(paths: list[str]) -> tuple[dict, dict]:
    """{(model, config): {level: result}} (later files win) and {model: (metric, dense, higher)}."""
    cells: dict[tuple[str, str], dict] = {}
    models: dict[str, tuple[str, float, bool]] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["results"]:
            key = (row["model"], row["config"])
            cells[key] = {**cells.get(key, {}), **{lv: r for lv, r in row["levels"].items() if "error" not in r}}
            models.setdefault(row["model"], (row["metric"], row["dense"], row["higher_is_better"]))
    return cells, models


def loss(result: dict | None, dense: float, higher: bool) -> float | None:
    """Points lost against dense (negative: better than dense)."""
    if result is None:
        return None
    return dense - result["score"] if higher else result["score"] - dense


def ranks(values: dict[str, float]) -> dict[str, float]:
    """Rank of each config by points lost (1 = least); ties share the better rank."""
    ordered = sorted(values.values())
    return {c: 1 + ordered.index(v) for c, v in values.items()}


def pivot(cells: dict, models: dict, configs: list[str], levels: list[str]) -> str:
    head = "| model (metric, dense) | " + " | ".join(configs) + " |"
    lines = [head, "|---|" + "---|" * len(configs)]
    within = {(c, lv, bar): 0 for c in configs for lv in levels for bar in (1, 3)}
    rank_sum = {c: [0.0, 0] for c in configs}
    for model, (metric, dense, higher) in models.items():
        row = []
        for c in configs:
            got = cells.get((model, c), {})
            row.append(" / ".join(f"{got[lv]['score']:.1f}" if lv in got else "–" for lv in levels))
            for lv in levels:
                lost = loss(got.get(lv), dense, higher)
                for bar in (1, 3):
                    within[(c, lv, bar)] += lost is not None and lost <= bar + 1e-9
        for lv in levels:
            lost = {c: loss(cells.get((model, c), {}).get(lv), dense, higher) for c in configs}
            lost = {c: v for c, v in lost.items() if v is not None}
            if len(lost) > 1:
                for c, r in ranks(lost).items():
                    rank_sum[c][0] += r
                    rank_sum[c][1] += 1
        lines.append(f"| {model} ({metric}, dense {dense:.1f}) | " + " | ".join(row) + " |")
    for bar in (1, 3):
        lines.append(f"| within {bar} point{'s' if bar > 1 else ''} of dense | "
                     + " | ".join(" / ".join(str(within[(c, lv, bar)]) for lv in levels) for c in configs) + " |")
    lines.append("| mean rank (cells ranked) | " + " | ".join(
        f"{s / n:.2f} ({n})" if n else "–" for s, n in rank_sum.values()) + " |")
    lines.append("| mean points lost, models every config ran | " + " | ".join(
        " / ".join(_mean_loss(cells, models, configs, c, lv) for lv in levels) for c in configs) + " |")
    return "\n".join(lines)


def _mean_loss(cells: dict, models: dict, configs: list[str], config: str, level: str) -> str:
    """Mean points lost at `level` over the models where every config has a cell (so columns compare)."""
    common = [m for m in models if all(level in cells.get((m, c), {}) for c in configs)]
    lost = [loss(cells[(m, config)][level], models[m][1], models[m][2]) for m in common]
    return f"{sum(lost) / len(lost):.1f} ({len(lost)})" if lost else "–"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", help="comma-separated bench_tasks.py --json files")
    ap.add_argument("--levels", default="0.8,0.5")
    ap.add_argument("--configs", help="columns, in order (default: every config, in order of appearance)")
    args = ap.parse_args(argv)
    cells, models = load(args.json.split(","))
    configs = args.configs.split(",") if args.configs else list(dict.fromkeys(c for _, c in cells))
    print(pivot(cells, models, configs, [str(float(v)) for v in args.levels.split(",")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
