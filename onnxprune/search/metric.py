"""A user's task metric for `onnxprune search --metric SPEC`: a Python callable that scores a model.

SPEC is `package.module:function` (importable) or `path/to/file.py:function`. The function takes the
path of an .onnx file and returns one number, higher is better (accuracy, F1, minus a CER). The search
calls it in each worker on each candidate's model, and once on the dense model for reference. The
spec, not the function, travels to workers (local processes or Ray tasks), so it must resolve there.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
from typing import Callable

from onnxprune.errors import BadInputError, first_line

Metric = Callable[[str], float]


def load_metric(spec: str) -> Metric:
    """The callable that `spec` names; a one-line BadInputError if it cannot be found."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise BadInputError(f"--metric {spec}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if target.endswith(".py"):
            if not os.path.isfile(target):
                raise BadInputError(f"--metric {spec}: {target} is not a file")
            loader = importlib.util.spec_from_file_location(f"onnxprune_user_metric_{abs(hash(target))}", target)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except BadInputError:
        raise
    except Exception as exc:  # the user's code: any error it raises on import is theirs to see
        raise BadInputError(f"--metric {spec}: importing {target} failed: {first_line(exc, 300)}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise BadInputError(f"--metric {spec}: {target} has no function {name}")
    return function


def score(spec: str, model_path: str) -> float:
    """`spec`'s metric on the model at `model_path`, checked to be one finite number."""
    try:
        value = load_metric(spec)(model_path)
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(f"--metric {spec} failed on {os.path.basename(model_path)}: "
                            f"{type(exc).__name__}: {first_line(exc, 300)}") from None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise BadInputError(f"--metric {spec}: returned {type(value).__name__}, not a number") from None
    if not math.isfinite(value):
        raise BadInputError(f"--metric {spec}: returned {value} for {os.path.basename(model_path)}")
    return value
