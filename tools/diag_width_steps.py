#!/usr/bin/env python3
"""Which prunable groups step differently under width_step.py than under the old rule (every group's kept
count a multiple of --round-to, single channels for groups no wider than it), on the task models
(tools/tasks.py) and the survey exports (tools/survey_exports.py); and the MACs floor `--hidden auto`
compares the target with (every group at the data-aware default's cap), with the rounding and without.

    .venv/bin/python tools/diag_width_steps.py [--round-to 8] [--survey all|KEY,KEY]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
import sys
import warnings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from diag_distill_auto import TASKS, survey_data, task_data  # noqa: E402
from onnxprune.couple.dependency import build_dependency  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402
from onnxprune.hidden_stage import reachable  # noqa: E402
from onnxprune.options import PruneOptions, Target  # noqa: E402
from onnxprune.select.width_step import group_steps  # noqa: E402


def effective(size: int, step: int) -> int:
    """The step rounded_keep takes: single channels for a group no wider than the step."""
    return step if size > step else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--survey", default="all", help="survey keys, or all")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import survey_exports
    keys = [e.key for e in survey_exports.ENTRIES] if a.survey == "all" else [k for k in a.survey.split(",") if k]
    cases = [(n, task_data) for n in a.tasks.split(",") if n] + [(k, survey_data) for k in keys]
    for name, load in cases:
        try:
            dep = build_dependency(ModelGraph(load(name)[0]))
        except Exception as exc:  # noqa: BLE001 - a model this probe cannot read is reported, not fatal
            print(f"{name}: error {str(exc)[:100]}")
            continue
        steps = group_steps(dep, a.round_to)
        prunable = [g for g in dep.groups if g.prunable >= 2]
        changed = [(g.size, effective(g.size, a.round_to), effective(g.size, steps[g.id])) for g in prunable
                   if effective(g.size, steps[g.id]) != effective(g.size, a.round_to)]
        options = PruneOptions(target=Target(macs=0.5)).resolved(True, 0)
        floors = [reachable(dep, replace(options, round_to=r)) if dep.groups else float("nan") for r in (a.round_to, 1)]
        print(f"{name}: {len(prunable)} prunable groups, {len(changed)} step differently"
              + (f" (size, old step, new step): {changed[:6]}" if changed else "")
              + f"; MACs floor {floors[0]:.3f} rounded, {floors[1]:.3f} not", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
