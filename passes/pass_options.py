"""Types and ranges of recipe pass options, checked when the recipe is read (exit 2, one line).

Options named like command-line flags (ratio, lr, epochs, ...) take the flags' ranges (limits.py);
options with a plain annotation in the pass's constructor (float, int, bool, str) take that type."""

from __future__ import annotations

import inspect
import math

from onnxprune.errors import BadInputError
from onnxprune.load.limits import RANGES

_TYPES = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}


def check_pass_options(cls, options: dict) -> None:
    """BadInputError naming the pass, the option, its value and what it takes."""
    name = cls.pass_name() if hasattr(cls, "pass_name") else cls.__name__
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        params = {}
    for key, value in options.items():
        if key == "threads" and value is not None:
            from onnxprune.load.limits import _cores
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _cores():
                raise BadInputError(f"pass {name}: threads = {value!r}: must be an integer in [0, {_cores()}]")
            continue
        if key in RANGES and value is not None and not isinstance(value, dict):  # per-layer tables: the pass checks
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not RANGES[key].accepts(value):
                raise BadInputError(f"pass {name}: {key} = {value!r}: must be a finite number in "
                                    f"{RANGES[key].text()}")
            continue
        annotation = params[key].annotation if key in params else inspect.Parameter.empty
        if not isinstance(annotation, str) or value is None:
            continue
        parts = [p.strip() for p in annotation.split("|")]
        allowed = [_TYPES[p] for p in parts if p in _TYPES]
        if not allowed or len(allowed) != len([p for p in parts if p != "None"]):
            continue  # an annotation we do not model (Any, Dataset | str, ...)
        kinds = tuple(t for group in allowed for t in group)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok:
            raise BadInputError(f"pass {name}: {key} = {value!r}: expected {annotation.replace(' | None', '')}")
