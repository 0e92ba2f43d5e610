#!/usr/bin/env python3
"""Build-pipeline entry point: the same arguments and exit codes as the `onnxprune` command.

    python tools/prune_onnx.py IN.onnx -o OUT.onnx --ratio 0.3 [--calib DATA.npz] [--report R.json]
    python tools/prune_onnx.py prune IN.onnx ...      (any onnxprune subcommand works too)
    python tools/prune_onnx.py --recipe RECIPE.toml [-o OUT.onnx] [--force]   (= onnxprune run RECIPE)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from onnxprune.cli.main import COMMANDS, main  # noqa: E402


def _with_subcommand(argv: list[str]) -> list[str]:
    """`prune` is the default subcommand, so a pipeline can call the script with the model first;
    `--recipe FILE` (anywhere) means `run FILE`."""
    for i, arg in enumerate(argv):
        if arg == "--recipe":  # without a file, `run` itself says the recipe is missing
            return ["run", *argv[i + 1:i + 2], *argv[:i], *argv[i + 2:]]
        if arg.startswith("--recipe="):
            return ["run", arg.split("=", 1)[1], *argv[:i], *argv[i + 1:]]
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        return ["prune", *argv]
    return argv


if __name__ == "__main__":
    sys.exit(main(_with_subcommand(sys.argv[1:])))
