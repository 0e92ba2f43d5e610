#!/usr/bin/env python3
"""One table from tools/bench_tasks.py runs of fisher against reconstruction and tools/bench_criterion_pick.py
picks: per model, each config's task score and output error vs dense, what the held-out check picked per
probe seed, and the task score that pick lands on (fisher's cell of that seed, or reconstruction's).

    python tools/criterion_table.py --runs 'docs/bench_issue9_s12_few_*.json' --picks docs/bench_issue9_s12_pick.json

Configs are named f<seed> (the default, fisher), r<seed> (criterion reconstruction) and rv<seed>
(reconstruction with 4 views); reconstruction does not depend on the probe seed, so r0 stands for every seed.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path


def cells(paths: list[str]) -> tuple[dict, dict]:
    """{model: {config: cell}} and {model: (dense, higher_is_better)} from bench_tasks JSONs (level 0.5)."""
    out: dict[str, dict] = {}
    dense: dict[str, tuple[float, bool]] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["results"]:
            for cell in row["levels"].values():
                out.setdefault(row["model"], {})[row["config"]] = cell
            dense[row["model"]] = (row["dense"], row["higher_is_better"])
    return out, dense


def fmt(cell: dict | None) -> str:
    if cell is None:
        return "–"
    if "error" in cell:
        return "error"
    err = cell.get("output_rel_err")
    return f"{cell['score']:.1f}" + (f" ({err:.3f})" if err is not None else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="glob of bench_tasks JSONs")
    ap.add_argument("--picks", help="bench_criterion_pick JSON")
    ap.add_argument("--halves", help="diag_score_halves JSON: print its table too")
    args = ap.parse_args(argv)
    table, dense = cells(sorted(glob.glob(args.runs)))
    picks = json.loads(Path(args.picks).read_text()) if args.picks and Path(args.picks).is_file() else []
    print("| model (dense) | fisher seed 0 | fisher seed 1 | reconstruction | reconstruction, 4 views | "
          "held-out pick (seed: pick -> score) |")
    print("|---|---|---|---|---|---|")
    for model, row in table.items():
        got = []
        for p in (p for p in picks if p["model"] == model and "criterion" in p):
            crit = p["criterion"]
            cell = row.get(f"f{p['seed']}") if crit == "fisher" else row.get("r0")
            got.append(f"{p['seed']}: {crit[:5]} -> {cell['score']:.1f}" if cell and "score" in cell else
                       f"{p['seed']}: {crit[:5]}")
        d, higher = dense[model]
        print(f"| {model} ({d:.1f}{'' if higher else ', lower is better'}) | {fmt(row.get('f0'))} | "
              f"{fmt(row.get('f1'))} | {fmt(row.get('r0'))} | {fmt(row.get('rv0'))} | {'; '.join(got) or '–'} |")
    if any("held_out_rel_l2" in p for p in picks):
        print("\n| model | seed | held-out rel. L2: fisher | reconstruction | pick | check s | fisher's prune s |")
        print("|---|---|---|---|---|---|---|")
        for p in (p for p in picks if "held_out_rel_l2" in p):
            e, f = p["held_out_rel_l2"], table.get(p["model"], {}).get(f"f{p['seed']}", {})
            print(f"| {p['model']} | {p['seed']} | {e.get('fisher', float('nan')):.3f} | "
                  f"{e.get('reconstruction', float('nan')):.3f} | {p['criterion']} | {p['check_s']:.0f} | "
                  f"{f.get('prune_s', float('nan')):.0f} |")
    if args.halves:
        print("\n| model | criterion | Spearman | within groups | lower-half overlap | channels |")
        print("|---|---|---|---|---|---|")
        for h in (h for h in json.loads(Path(args.halves).read_text()) if "spearman" in h):
            print(f"| {h['model']} | {h['criterion']} | {h['spearman']:.3f} | {h['within_groups']:.3f} | "
                  f"{h['lower_half_overlap']:.3f} | {h['channels']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
