"""onnxprune passes inside a real onnx_ir.passes.PassManager: the result runs in ONNX Runtime with fewer
parameters and the same interface, the caller's ir.Model is untouched, and a missed gate stops the run."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune import BadInputError
from onnxprune.load.runtime import session
from onnxprune.passes import ChannelPruning, PassContext, Pipeline, Sparsify, Validate
from onnxprune.passes import onnx_ir_adapter

ir = pytest.importorskip("onnx_ir")
import onnx_ir.passes.common  # noqa: E402

C2F = FIXTURES / "c2f_tiny.onnx"


def params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def interface(model: onnx.ModelProto) -> list:
    return [[(v.name, str(v.type)) for v in model.graph.input], [v.name for v in model.graph.output]]


def test_pass_manager_runs_onnxprune_passes_next_to_onnx_ir_passes():
    dense = onnx.load(str(C2F))
    context = PassContext(dense=dense)
    prune = onnx_ir_adapter.as_ir_pass(Pipeline([ChannelPruning(0.3), Sparsify(0.2)]), context)
    check = onnx_ir_adapter.as_ir_pass(Validate(min_cosine=0.9), context)
    manager = ir.passes.PassManager([prune, ir.passes.common.RemoveUnusedNodesPass(), check])
    model = ir.load(str(C2F))
    before = ir.to_proto(model).SerializeToString()
    result = manager(model)
    assert ir.to_proto(model).SerializeToString() == before  # the adapter is functional
    assert result.modified and result.model is not model
    pruned = ir.to_proto(result.model)
    onnx.checker.check_model(pruned, full_check=True)
    assert params(pruned) < params(dense) and interface(pruned) == interface(dense)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    name = dense.graph.input[0].name
    want, got = session(dense).run(None, {name: x}), session(pruned).run(None, {name: x})
    assert [w.shape for w in want] == [g.shape for g in got] and all(np.isfinite(g).all() for g in got)
    fidelity = check.last_result.report["fidelity"]
    assert fidelity["cosine"] >= 0.9 and check.last_result.model is not None
    assert repr(prune).startswith("as_ir_pass(Pipeline(")


def test_a_missed_gate_stops_the_pass_manager():
    dense = onnx.load(str(C2F))
    context = PassContext(dense=dense)
    manager = ir.passes.PassManager([onnx_ir_adapter.as_ir_pass(ChannelPruning(0.6), context),
                                     onnx_ir_adapter.as_ir_pass(Validate(min_cosine=0.99999), context)])
    with pytest.raises(ir.passes.PassError) as caught:
        manager(ir.load(str(C2F)))
    cause = caught.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert "cosine" in str(cause) and "min_cosine 0.99999" in str(cause)


def test_without_onnx_ir_the_adapter_says_what_to_install(monkeypatch):
    onnx_ir_adapter._adapter_class.cache_clear()
    monkeypatch.setitem(sys.modules, "onnx_ir", None)  # import onnx_ir now raises ImportError
    try:
        with pytest.raises(BadInputError, match=r"needs onnx-ir: pip install 'onnxprune\[ir\]'"):
            onnx_ir_adapter.as_ir_pass(Validate())
    finally:
        onnx_ir_adapter._adapter_class.cache_clear()
    with pytest.raises(BadInputError, match="needs an onnxprune pass"):
        onnx_ir_adapter.as_ir_pass(ir.passes.common.RemoveUnusedNodesPass())
