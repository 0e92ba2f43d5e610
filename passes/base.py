"""What every pass shares: the context it runs in, the result it returns, and the registry.

Modelled on onnx-ir's PassBase/PassResult: a pass is an object configured once and called on a
model; `requires` and `ensures` are optional pre- and post-conditions around `call`. Each pass
declares what it does to the model it is given, and the base checks the declaration on every call:

    in_place  changes_input
    False     False          functional (the default): returns a new model, or the same object when
                             nothing changed; the input is never modified
    True      True           in-place: modifies the model it is given and returns that very object
    True      False          read-only (Validate): returns the model it is given, untouched
    False     True           destructive: may spoil its input (a functional pipeline copies first)

A recipe names a pass by its registered name, so adding one is one decorator:

    @register
    class Reconstruct(Pass):
        ...
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx

from onnxprune.load.data import Dataset
from onnxprune.errors import BadInputError
from onnxprune.check.gates import Gate


@dataclass
class PassContext:
    """What passes share: the dense reference model, data and input shapes.

    `calib` feeds data-driven criteria and recovery (a .npz, a folder, a Dataset, feed dicts or a
    CalibrationDataReader); `data` is the evaluation set for `Validate` and the final report
    (labels give accuracy), `calib` when not given, synthetic inputs when neither is.
    """

    dense: onnx.ModelProto
    calib: Any = None
    data: Any = None
    input_shapes: dict[str, tuple[int, ...]] | None = None
    seed: int = 0
    threads: int = 0
    bench_rounds: int = 20
    source: str = "<in-memory model>"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Concrete input shapes: given ones, else the evaluation data's, else the model's defaults."""
        if "shapes" not in self._cache:
            from onnxprune.graph.model_graph import resolve_input_shapes
            data = self.evaluation_data()
            if self.input_shapes:
                shapes = resolve_input_shapes(self.dense, self.input_shapes)
            elif data is not None:
                shapes = data.sample_shapes()
            else:
                shapes = resolve_input_shapes(self.dense, None)
            self._cache["shapes"] = shapes
        return self._cache["shapes"]

    def evaluation_data(self) -> Dataset | None:
        """`data` (or `calib`) loaded once as a Dataset keyed by the dense model's inputs; None if neither."""
        return self._loaded("data", self.data if self.data is not None else self.calib)

    def calibration_data(self) -> Dataset | None:
        """`calib` (or `data`) loaded once, for passes that fit to data (quantization ranges)."""
        return self._loaded("calib", self.calib if self.calib is not None else self.data)

    def _loaded(self, key: str, source: Any) -> Dataset | None:
        if key not in self._cache:
            loaded = None
            if source is not None:
                from onnxprune.score.calibration import load_calibration
                from onnxprune.graph.model_graph import resolve_input_shapes
                ranks = {k: len(v) for k, v in resolve_input_shapes(self.dense, self.input_shapes).items()}
                loaded = load_calibration(source, ranks)
            self._cache[key] = loaded
        return self._cache[key]

    def data_or_synthetic(self) -> tuple[Dataset, str]:
        """The evaluation data, or deterministic synthetic samples; and which of the two it is."""
        data = self.evaluation_data()
        if data is not None:
            return data, "given"
        if "synthetic" not in self._cache:
            from onnxprune.load.data import synthetic_dataset
            from onnxprune.load.runtime import session
            self._cache["synthetic"] = synthetic_dataset(session(self.dense, self.threads), self.shapes(), samples=8)
        return self._cache["synthetic"], "synthetic"


@dataclass
class PassResult:
    """The model a pass returns, whether it differs from the input, what it reports, and any gates."""

    model: onnx.ModelProto
    changed: bool
    report: dict = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)


class PassError(RuntimeError):
    """A pass broke its own declaration (a bug in the pass, not in the user's input)."""


class Pass(abc.ABC):
    """A configured step: `pass_(model, context) -> PassResult`."""

    name: ClassVar[str] = ""  # the registry name; the class name when empty
    in_place: ClassVar[bool] = False  # returns the very object it was given
    changes_input: ClassVar[bool] = False  # may modify the object it was given

    def __call__(self, model: onnx.ModelProto, context: PassContext) -> PassResult:
        self.requires(model, context)
        before = None if self.changes_input else fingerprint(model)
        result = self.call(model, context)
        if not isinstance(result, PassResult):
            raise TypeError(f"pass {self.pass_name()} returned {type(result).__name__}, not a PassResult")
        self._check_declaration(model, before, result)
        self.ensures(result, context)
        return result

    def _check_declaration(self, model: onnx.ModelProto, before: bytes | None, result: PassResult) -> None:
        name = self.pass_name()
        if before is not None and fingerprint(model) != before:
            raise PassError(f"pass {name} modified the model it was given, but does not declare changes_input; "
                            f"work on a copy (ModelProto.CopyFrom) or declare in_place = changes_input = True")
        if self.in_place and result.model is not model:
            raise PassError(f"pass {name} is declared in-place but returned a different model object; return "
                            f"the model it was given, or declare in_place = False")
        if not self.in_place and result.model is model and result.changed:
            raise PassError(f"pass {name} is functional but returned its input object as changed; return a new "
                            f"model, or declare in_place = changes_input = True")

    @abc.abstractmethod
    def call(self, model: onnx.ModelProto, context: PassContext) -> PassResult:
        """Do the work, as declared by `in_place` and `changes_input`."""

    def requires(self, model: onnx.ModelProto, context: PassContext) -> None:
        """Pre-condition (optional): raise BadInputError when the pass cannot run on `model`."""

    def ensures(self, result: PassResult, context: PassContext) -> None:
        """Post-condition (optional): raise ValidationError when the result is unacceptable."""

    def options(self) -> dict:
        """The pass's configuration, for the report (JSON-serialisable)."""
        return {}

    @classmethod
    def pass_name(cls) -> str:
        return cls.name or cls.__name__

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{self.pass_name()}({args})"


def fingerprint(model: onnx.ModelProto) -> bytes | None:
    """A digest of the serialized model, to tell whether a pass modified it; None past protobuf's 2 GB."""
    if model.ByteSize() >= 2**31:
        return None
    return hashlib.sha256(model.SerializeToString(deterministic=True)).digest()


def shape_table(value, where: str) -> dict[str, tuple[int, ...]] | None:
    """Input shapes as recipes and pass options write them: `{name: [1, 3, 320, 320]}` or
    `{name: "1x3x320x320"}`, checked (BadInputError naming `where`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadInputError(f"{where} must map input names to shapes, got {value!r}")
    shapes = {}
    for name, dims in value.items():
        parts = dims.lower().split("x") if isinstance(dims, str) else dims
        try:
            shape = tuple(int(d) for d in parts)
            if not shape or any(d <= 0 for d in shape) or any(isinstance(d, (bool, float)) for d in parts):
                raise ValueError
        except (TypeError, ValueError):
            raise BadInputError(f"{where}.{name} must be positive sizes like [1, 3, 320, 320] or \"1x3x320x320\", "
                                f"got {dims!r}") from None
        shapes[name] = shape
    return shapes


PASSES: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available to recipes under its name."""
    PASSES[cls.pass_name()] = cls
    return cls


def _key(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _discover() -> None:
    """Import every module of this package once, so each @register has run."""
    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{info.name}")


def available() -> list[str]:
    _discover()
    return sorted(PASSES)


def get_pass(name: str) -> type[Pass]:
    """The pass class registered as `name` (case, '_' and '-' ignored: channel_pruning = ChannelPruning)."""
    _discover()
    by_key = {_key(n): cls for n, cls in PASSES.items()}
    if _key(name) not in by_key:
        raise BadInputError(f"unknown pass '{name}'; available passes: {', '.join(available())}")
    return by_key[_key(name)]


def create_pass(name: str, options: dict | None = None) -> Pass:
    """An instance of the pass registered as `name`, configured with `options` (BadInputError if wrong)."""
    cls = get_pass(name)
    from onnxprune.passes.pass_options import check_pass_options
    check_pass_options(cls, options or {})
    try:
        return cls(**(options or {}))
    except ValueError as exc:  # a conversion inside the pass (float("lots")): one line, exit 2
        raise BadInputError(f"pass {cls.pass_name()}: {exc}") from None
    except TypeError as exc:
        # "Foo.__init__() got an unexpected keyword argument 'x'" -> "got an unexpected keyword argument 'x'"
        message = str(exc)
        message = message.split("__init__() ", 1)[1] if "__init__() " in message else message
        raise BadInputError(f"pass {cls.pass_name()}: {message}") from None


def pass_table(entry, where: str) -> tuple[str, dict]:
    """A recipe's `{pass = "Name", option = value, ...}` table as (name, options)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("pass"), str):
        raise BadInputError(f"{where} needs a 'pass' name, e.g. pass = \"ChannelPruning\"")
    return entry["pass"], {k: v for k, v in entry.items() if k != "pass"}


def pass_from_table(entry, where: str) -> Pass:
    """The pass a recipe table describes, configured (BadInputError prefixed with `where`)."""
    name, options = pass_table(entry, where)
    try:
        return create_pass(name, options)
    except BadInputError as exc:
        raise BadInputError(f"{where}: {exc}") from None
