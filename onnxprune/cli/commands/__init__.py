"""Subcommands beyond prune and inspect, one module each: validate, bench, run (recipes).

Each module has `add_parser(sub)` and `run(args) -> exit code`; cli.py registers them with one call.
"""

from __future__ import annotations

import argparse
from typing import Callable

from onnxprune.cli.commands import bench, compare, finetune, run, train, validate

_MODULES = {"validate": validate, "bench": bench, "run": run, "finetune": finetune, "train": train, "compare": compare}
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {name: m.run for name, m in _MODULES.items()}


def add_commands(sub) -> None:
    """Add every subcommand of this package to the `onnxprune` subparsers."""
    for module in _MODULES.values():
        module.add_parser(sub)


def add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log what happens (-vv: debug)")
