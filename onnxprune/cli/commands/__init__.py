"""Subcommands beyond prune and inspect, one module each: validate, bench, run (recipes).

Each module has `add_parser(sub)` and `run(args) -> exit code`; cli.py registers them with one call.
"""

from __future__ import annotations

import argparse
from typing import Callable

from onnxprune.cli.commands import bench, compare, finetune, run, search, train, validate

_MODULES = {"validate": validate, "bench": bench, "run": run, "finetune": finetune, "train": train, "compare": compare,
            "search": search}
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {name: m.run for name, m in _MODULES.items()}


def add_commands(sub) -> None:
    """Add every subcommand of this package to the `onnxprune` subparsers."""
    for module in _MODULES.values():
        module.add_parser(sub)
