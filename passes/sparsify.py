"""Sparsify: zero the smallest weights (unstructured or N:M) through `onnxprune.sparsify`, as a pass.

    [[passes]]
    pass = "Sparsify"
    sparsity = { conv = 0.5, linear = 0.8 }   # or one number for both
    pattern = "2:4"                           # or "unstructured" (the default)
"""

from __future__ import annotations

import onnx

from onnxprune.apply.sparsity import check_pattern
from onnxprune.errors import BadInputError
from onnxprune.passes.base import Pass, PassContext, PassResult, register

_KINDS = ("conv", "linear")


@register
class Sparsify(Pass):
    """Zero the smallest |w| of conv and linear layers. Shapes and parameter counts stay; the zeros
    compress (see the report's zip sizes) and N:M runs on sparse tensor cores. `sparse_initializers`
    stores weights as ONNX sparse tensors, which later passes cannot prune: put it last."""

    def __init__(self, sparsity: float | dict[str, float] = 0.5, scope: str = "local", pattern: str = "unstructured",
                 sparse_initializers: bool = False):
        self.sparsity = _checked_sparsity(sparsity)
        if scope not in ("local", "global"):
            raise BadInputError(f"pass Sparsify: scope must be 'local' or 'global', got {scope!r}")
        check_pattern(str(pattern))
        self.scope, self.pattern, self.sparse_initializers = scope, str(pattern), bool(sparse_initializers)

    def options(self) -> dict:
        return {"sparsity": self.sparsity, "scope": self.scope, "pattern": self.pattern,
                "sparse_initializers": self.sparse_initializers}

    def call(self, model: onnx.ModelProto, context: PassContext) -> PassResult:
        from onnxprune.api import sparsify

        result = sparsify(model, self.sparsity, scope=self.scope, pattern=self.pattern,
                          sparse_initializers=self.sparse_initializers, eval_data=context.evaluation_data(),
                          input_shapes=context.input_shapes)
        fragment = {k: v for k, v in result.report.items() if k not in ("schema", "input")}
        changed = any(not mask.all() for mask in (result.masks or {}).values())
        return PassResult(result.model, changed, fragment)


def _checked_sparsity(value) -> float | dict[str, float]:
    """One fraction in [0, 1), or {"conv": s, "linear": s} (a missing kind stays dense)."""
    per_kind = value if isinstance(value, dict) else {"conv": value, "linear": value}
    unknown = sorted(set(per_kind) - set(_KINDS))
    if unknown:
        raise BadInputError(f"pass Sparsify: sparsity keys are conv and linear, got {', '.join(unknown)}")
    for kind, s in per_kind.items():
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
            raise BadInputError(f"pass Sparsify: sparsity for {kind} layers must be in [0, 1), got {s!r}")
    if isinstance(value, dict):
        return {kind: float(per_kind.get(kind, 0.0)) for kind in _KINDS}
    return float(value)
