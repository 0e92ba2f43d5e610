"""Recipes: a pruning pipeline declared in a TOML or JSON file, kept under version control.

    input = "../fixtures/digits_cnn.onnx"      # or "zoo:nudenet_320n" (fetched and cached)
    output = "../out/digits_pruned.onnx"
    calibration = "../fixtures/digits_calib.npz"
    data = "../fixtures/digits_test.npz"         # evaluation set (labels give accuracy)
    report = "../out/digits_report.json"

    [[passes]]
    pass = "ChannelPruning"
    ratio = 0.1

    [[passes]]
    pass = "Validate"
    max_drop = 10.0

Relative paths are relative to the recipe file, so a recipe works from any working directory.
Every key and every pass option is checked when the recipe is read, before any work (exit 2).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from onnxprune.errors import BadInputError
from onnxprune.passes import Pass, Pipeline, create_pass
from onnxprune.passes.base import pass_table, shape_table

RECIPE_SCHEMA = "onnxprune.recipe/1"
_PATH_KEYS = ("input", "output", "calibration", "data", "report", "summary", "plot")
_INT_KEYS = {"seed": 0, "threads": 0, "bench_rounds": 20}
_KEYS = {"schema", "passes", "input_shapes", *_PATH_KEYS, *_INT_KEYS}


@dataclass
class Recipe:
    """A parsed recipe: where things are, and the passes with their options (already checked)."""

    source: str
    input: str
    passes: list[tuple[str, dict]]
    output: str | None = None
    calibration: str | None = None
    data: str | None = None
    report: str | None = None
    summary: str | None = None
    plot: str | None = None
    input_shapes: dict[str, tuple[int, ...]] | None = None
    seed: int = 0
    threads: int = 0
    bench_rounds: int = 20
    steps: list[Pass] = field(default_factory=list, repr=False)

    def pipeline(self) -> Pipeline:
        return Pipeline(self.steps)

    def model_path(self) -> str:
        """The input model's path; `zoo:NAME` is fetched into the cache first (python -m onnxprune.load.zoo)."""
        if self.input.startswith("zoo:"):
            from onnxprune.load import zoo
            try:
                return str(zoo.fetch(self.input[4:]))
            except ValueError as exc:
                raise BadInputError(f"{self.source}: {exc}") from None
        return self.input


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and check a .toml or .json recipe."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from None
    try:
        if path.suffix.lower() == ".toml":
            doc = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            raise BadInputError(f"{path}: a recipe is a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not valid {path.suffix[1:].upper()} ({exc})") from None
    return recipe_from_dict(doc, base=path.parent, source=str(path))


def recipe_from_dict(doc: dict, base: str | os.PathLike = ".", source: str = "<recipe>") -> Recipe:
    """Check a recipe document; paths are resolved against `base` (the recipe's folder)."""
    if not isinstance(doc, dict):
        raise BadInputError(f"{source}: a recipe is a table of keys, got {type(doc).__name__}")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise BadInputError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    if doc.get("schema", RECIPE_SCHEMA) != RECIPE_SCHEMA:
        raise BadInputError(f"{source}: schema '{doc['schema']}' is not supported; this version reads {RECIPE_SCHEMA}")
    if not isinstance(doc.get("input"), str) or not doc["input"]:
        raise BadInputError(f"{source}: 'input' (the model to prune) is required")
    values: dict = {}
    for key in _PATH_KEYS:
        value = doc.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise BadInputError(f"{source}: '{key}' must be a path string")
        values[key] = value if key == "input" and value.startswith("zoo:") else _resolve(value, base)
    for key, default in _INT_KEYS.items():
        value = doc.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadInputError(f"{source}: '{key}' must be a non-negative integer, got {value!r}")
        values[key] = value
    from onnxprune.load.limits import check_recipe_numbers
    check_recipe_numbers(values, source)
    passes = _passes(doc.get("passes"), source)
    steps = []
    for i, (name, options) in enumerate(passes, 1):
        try:
            steps.append(create_pass(name, options))
        except BadInputError as exc:
            raise BadInputError(f"{source}: passes[{i}]: {exc}") from None
    return Recipe(source=source, passes=passes, steps=steps,
                  input_shapes=shape_table(doc.get("input_shapes"), f"{source}: input_shapes"), **values)


def _resolve(value: str, base: str | os.PathLike) -> str:
    """`value` against the recipe's folder; normpath, not resolve(), so symlinked folders stay put."""
    path = os.path.expanduser(value)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(os.fspath(base), path))


def _passes(value, source: str) -> list[tuple[str, dict]]:
    if not isinstance(value, list) or not value:
        raise BadInputError(f"{source}: 'passes' must be a non-empty list of tables, each with a 'pass' name")
    return [pass_table(entry, f"{source}: passes[{i}]") for i, entry in enumerate(value, 1)]
