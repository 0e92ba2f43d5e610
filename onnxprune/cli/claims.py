"""Which files each command reads and writes: its inputs and its claimed outputs, checked by the output
guard (destinations.py) before the command does any work. A command with no outputs gets an empty
guard, so any write it makes is caught."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from onnxprune.load.destinations import Destinations

PLOT_FILES = ("kept_channels.png", "layer_channels.png")  # what write_plots (plots.py) writes


def for_command(args: argparse.Namespace) -> Destinations:
    """Register the inputs and claim the outputs of the parsed command line (BadInputError, exit 2)."""
    guard = Destinations(force=bool(getattr(args, "force", False)))
    claim = _CLAIMS.get(args.command)
    if claim is not None:
        claim(args, guard)
    return guard


def _inputs(guard: Destinations, args: argparse.Namespace, flags: dict[str, str]) -> None:
    for attr, what in flags.items():
        value = getattr(args, attr, None)
        guard.input(value, what, model=attr in ("model", "teacher"))


def _prune(args, guard: Destinations) -> None:
    from onnxprune.load.model_folder import is_model_folder

    folder = is_model_folder(args.model)
    _inputs(guard, argparse.Namespace(**{**vars(args), "model": None}) if folder else args,
            {"model": "model", "calib": "calibration data", "data": "evaluation data",
             "train_data": "training data", "val": "validation data", "plan": "plan"})
    if folder:  # a folder in, a folder out (cli/folder.py)
        from onnxprune.cli.folder import claim
        claim(args, guard)
    else:
        guard.claim(args.output, "-o", model=True)
    for attr, flag in (("report", "--report"), ("summary", "--summary"), ("save_plan", "--save-plan")):
        if getattr(args, attr, None):
            guard.claim(getattr(args, attr), flag)
    if args.plot:
        guard.folder(args.plot, "--plot", PLOT_FILES)


def _sparsify(args, guard: Destinations) -> None:
    _inputs(guard, args, {"model": "model", "data": "evaluation data"})
    guard.claim(args.output, "-o", model=True)
    if args.report:
        guard.claim(args.report, "--report")


def _sensitivity(args, guard: Destinations) -> None:
    _inputs(guard, args, {"model": "model", "calib": "calibration data"})
    for attr, flag in (("plot", "--plot"), ("json", "--json")):
        if getattr(args, attr, None):
            guard.claim(getattr(args, attr), flag)


def _finetune(args, guard: Destinations) -> None:
    _inputs(guard, args, {"model": "model", "data": "training data", "val": "validation data",
                          "teacher": "teacher model"})
    guard.claim(args.output, "-o", model=True)


def _train(args, guard: Destinations) -> None:
    _inputs(guard, args, {"model": "model", "data": "training data", "val": "validation data"})
    guard.claim(args.output, "-o", model=True)
    if args.report:
        guard.claim(args.report, "--report")


def _compare(args, guard: Destinations) -> None:
    from onnxprune.recover.schedules.compare import ORDER

    _inputs(guard, args, {"model": "model", "data": "training data", "val": "validation data"})
    for attr, flag in (("json", "--json"), ("plot", "--plot")):
        if getattr(args, attr, None):
            guard.claim(getattr(args, attr), flag)
    if args.save_dir:
        names = [s.strip() for s in args.schedules.split(",") if s.strip()] if args.schedules else list(ORDER)
        names = ["dense", *[n for n in names if n != "dense"]]
        for name in names:
            guard.claim(Path(args.save_dir) / f"{name}.onnx", "--save-dir", model=True)


def _search(args, guard: Destinations) -> None:
    _inputs(guard, args, {"model": "model", "calib": "calibration data", "data": "evaluation data"})
    if os.path.isdir(args.output) and os.path.exists(os.path.join(args.output, "search.json")):
        return  # a search to resume: its folder holds only what the search wrote
    guard.folder(args.output, "-o", ("search.json", "pareto.json", "pareto.png"))


def _run(args, guard: Destinations) -> None:
    from onnxprune.passes.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    guard.input(args.recipe, "recipe")
    guard.input(_zoo_path(recipe.input) if recipe.input.startswith("zoo:") else recipe.input, "model", model=True)
    guard.input(recipe.calibration, "calibration data")
    guard.input(recipe.data, "evaluation data")
    for name, options in recipe.passes:  # pass options that name files (train_data, val_data, plan, ...)
        for key, value in options.items():
            if isinstance(value, str) and value and os.path.exists(os.path.join(Path(args.recipe).parent, value)):
                guard.input(os.path.join(Path(args.recipe).parent, value), f"{name} {key}")
            elif isinstance(value, str) and value and os.path.exists(value):
                guard.input(value, f"{name} {key}")
    output = args.output or recipe.output
    if output:
        guard.claim(output, "-o" if args.output else f"{recipe.source}: output", model=True)
    for attr, flag in (("report", "--report"), ("summary", "--summary")):
        path = getattr(args, attr, None) or getattr(recipe, attr)
        if path:
            guard.claim(path, flag if getattr(args, attr, None) else f"{recipe.source}: {attr}")
    plot = args.plot or recipe.plot
    if plot:
        guard.folder(plot, "--plot" if args.plot else f"{recipe.source}: plot", PLOT_FILES)


def _zoo_path(spec: str) -> str | None:
    """Where `zoo:NAME` is (or will be) cached, without fetching it: outputs may not land there either."""
    from onnxprune.load import zoo

    try:
        src = zoo._source(spec[4:])
        installed = zoo._installed_light(src.member) if zoo.is_light(spec[4:]) else None
        return str(installed or zoo.cache_dir() / "models" / f"{src.package}-{src.version}" / src.member)
    except Exception:  # an unknown name is reported when the recipe's model is fetched
        return None


_CLAIMS = {"prune": _prune, "sparsify": _sparsify, "sensitivity": _sensitivity, "finetune": _finetune,
           "train": _train, "compare": _compare, "run": _run, "search": _search}
