"""A latency target on a QDQ model times the model as it will run: the lifted float weights are
lowered back to integers behind their DequantizeLinear (apply/as_run.py) in every model the latency
profile and the landing time, and ONNX Runtime's fused integer kernels (QLinearConv `..._token_N`)
are charged to the analysed nodes. No timing is asserted: which graphs are timed, and where kernels go."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxprune
from conftest import fixture_path
from onnxprune.apply.as_run import as_run, dense_as_run
from onnxprune.couple.dependency import build_dependency
from onnxprune.couple.plan import Plan
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.qdq_lift import lift
from onnxprune.select import latency, latency_profile
from onnxprune.select.latency_profile import kernel_owners
from onnxprune.select.plan import select_uniform
from test_qdq_recover import _quantized

INTEGERS = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT32}


@pytest.fixture(scope="module")
def qdq(tmp_path_factory) -> onnx.ModelProto:
    return _quantized(onnx.load(str(fixture_path("digits_cnn.onnx"))), tmp_path_factory.mktemp("qdq") / "digits_qdq.onnx")


def _integer_weights(model: onnx.ModelProto) -> bool:
    """Every Conv/Gemm weight is integers behind a DequantizeLinear, none a float initializer."""
    inits = {t.name: t for t in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    weights = [n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert weights
    return all(w not in inits and made[w].op_type == "DequantizeLinear" and made[w].input[0] in inits
               and inits[made[w].input[0]].data_type in INTEGERS for w in weights)


def test_the_model_as_run_holds_integer_weights_at_every_width(qdq):
    lifted_model, lifted = lift(qdq)
    dep = build_dependency(ModelGraph(lifted_model))
    assert not _integer_weights(lifted_model)  # what the criteria read: floats
    dense = dense_as_run(dep, lifted)
    assert _integer_weights(dense)
    assert _integer_weights(as_run(lifted)(select_uniform(dep, np.zeros(dep.num_channels), 0.5)))
    assert dense_as_run(dep, {}) is dep.graph.model  # a float model is timed as analysed


def test_qlinear_kernels_are_charged_to_the_analysed_convolutions(qdq, tmp_path):
    lifted_model, lifted = lift(qdq)
    dep = build_dependency(ModelGraph(lifted_model))
    opts = ort.SessionOptions()
    opts.optimized_model_filepath, opts.log_severity_level = str(tmp_path / "opt.onnx"), 3
    ort.InferenceSession(dense_as_run(dep, lifted).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "opt.onnx")).graph
    fused = [n.name for n in optimized.node if n.op_type in ("QLinearConv", "QGemm")]
    assert fused  # ORT ran integer kernels
    owners = kernel_owners(lifted_model.graph, optimized)
    convs = {n.name for n in lifted_model.graph.node if n.op_type in ("Conv", "Gemm")}
    assert {owners.get(k) for k in fused} == convs  # each to its own node, not to the input's QuantizeLinear


def test_a_latency_target_on_a_qdq_model_profiles_and_lands_on_integer_graphs(qdq, tmp_path, monkeypatch):
    profiled, timed = [], []
    real_profile, real_session = latency_profile.profile_interleaved, latency.session

    def profile(models, *args, **kwargs):
        profiled.extend(models)
        return real_profile(models, *args, **{**kwargs, "runs": 1})

    def session(model, threads):
        timed.append(model)
        return real_session(model, threads)

    monkeypatch.setattr(latency_profile, "profile_interleaved", profile)
    monkeypatch.setattr(latency, "session", session)
    monkeypatch.setattr(latency, "ATTEMPTS", 2)
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path))
    result = onnxprune.prune(qdq, target_latency=0.6, bench_rounds=1)
    assert len(profiled) >= 2 and len(timed) >= 2  # dense and at least one candidate each
    assert all(_integer_weights(m) for m in profiled + timed)
    assert _integer_weights(result.model)
