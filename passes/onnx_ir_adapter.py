"""Run onnxprune passes inside onnx-ir / onnxscript pass managers.

    import onnx, onnx_ir as ir, onnx_ir.passes.common
    from onnxprune.passes import ChannelPruning, PassContext, Validate
    from onnxprune.passes.onnx_ir_adapter import as_ir_pass

    context = PassContext(dense=onnx.load("model.onnx"))   # the reference Validate compares against
    manager = ir.passes.PassManager([as_ir_pass(ChannelPruning(0.3), context),
                                     ir.passes.common.RemoveUnusedNodesPass(),
                                     as_ir_pass(Validate(min_cosine=0.95), context)])
    result = manager(ir.load("model.onnx"))

The adapter is a functional onnx-ir pass: it serializes the ir.Model to a ModelProto, runs the
onnxprune pass on it and returns a new ir.Model, so the caller's ir.Model is never touched whatever
the pass declares. A missed gate raises GateError (the pass manager wraps it in its PassError);
the last onnxprune PassResult (report, gates) stays on the adapter as `last_result`.

onnx-ir is optional (`pip install onnxprune[ir]`); it is imported only when an adapter is made.
"""

from __future__ import annotations

import functools
from typing import Any

from onnxprune.check.gates import raise_if_failed
from onnxprune.errors import BadInputError
from onnxprune.passes.base import Pass, PassContext, PassResult


def _onnx_ir() -> Any:
    try:
        import onnx_ir
        import onnx_ir.passes
    except ImportError:
        raise BadInputError("the onnx-ir adapter needs onnx-ir: pip install 'onnxprune[ir]'") from None
    return onnx_ir


def as_ir_pass(pass_: Pass, context: PassContext | None = None) -> Any:
    """`pass_` as an onnx_ir.passes.FunctionalPass. Without `context`, each call's input model is the
    dense reference (what Validate compares against and FineTune distils from)."""
    if not isinstance(pass_, Pass):
        raise BadInputError(f"as_ir_pass needs an onnxprune pass, got {pass_!r}")
    return _adapter_class()(pass_, context)


@functools.cache
def _adapter_class() -> type:
    """The adapter class, defined once onnx-ir is known to be importable (it subclasses onnx-ir's)."""
    ir = _onnx_ir()

    class OnnxPrunePass(ir.passes.FunctionalPass):
        def __init__(self, pass_: Pass, context: PassContext | None):
            self.pass_, self.context = pass_, context
            self.last_result: PassResult | None = None

        def call(self, model: Any) -> Any:
            proto = ir.to_proto(model)
            context = self.context if self.context is not None else PassContext(dense=proto)
            result = self.pass_(proto, context)
            self.last_result = result
            raise_if_failed(result.gates)  # a pass manager has no gates: a miss stops it
            # a new ir.Model even when nothing changed: onnx-ir checks that functional passes return one
            return ir.passes.PassResult(ir.from_proto(result.model), result.changed)

        def __repr__(self) -> str:
            return f"as_ir_pass({self.pass_!r})"

    return OnnxPrunePass
