"""The in-context latency model: ORT's profiler on the whole model at each uniform width, every
kernel it ran (fused, NCHWc, reorders) charged back to an original node. No timing is asserted:
only where the kernels' time goes, what the curves are built from, the cache, and the per-MAC
channel costs the allocation ranks by."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from conftest import FIXTURES
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.select.latency_model import GRID, LatencyModel, NodeCurve
from onnxprune.select import latency_profile
from onnxprune.select.latency_profile import build_profiled_model, kernel_owners, profile_nodes
from onnxprune.select.plan import CostModel, select_uniform

DIGITS = FIXTURES / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def dep():
    return build_dependency(ModelGraph(onnx.load(str(DIGITS))))


def _residual_block() -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu -> Conv -> Add(skip) -> Relu: ORT fuses each Conv with what follows."""
    rng = np.random.default_rng(0)
    w = lambda name, o, i: numpy_helper.from_array(rng.standard_normal((o, i, 3, 3)).astype(np.float32), name)  # noqa: E731
    bn = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in
          (("s", np.ones(16)), ("b", np.zeros(16)), ("m", np.zeros(16)), ("v", np.ones(16)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1"], name="bn1"),
             helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "x"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"], name="relu2")]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", 1, [1, 16, 24, 24])],
                              [helper.make_tensor_value_info("y", 1, [1, 16, 24, 24])], [w("w1", 16, 16), w("w2", 16, 16)] + bn)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_fused_kernels_are_charged_to_the_convolution_they_start_from(tmp_path):
    model = _residual_block()
    opts = ort.SessionOptions()
    opts.optimized_model_filepath, opts.log_severity_level = str(tmp_path / "opt.onnx"), 3
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "opt.onnx")).graph
    assert {n.name for n in optimized.node} - {n.name for n in model.graph.node}  # ORT did rewrite it
    owners = kernel_owners(model.graph, optimized, weighted={"conv1", "conv2"})
    # every kernel traced back but the reorder of the graph's input (a fixed cost: its channels are frozen)
    assert set(owners) == {n.name for n in optimized.node if list(n.input) != ["x"]}
    convs = [n.name for n in optimized.node if "Conv" in n.op_type]
    assert sorted(owners[c] for c in convs) == ["conv1", "conv2"]


def test_profiled_times_belong_to_original_nodes(dep):
    weighted = {n.name for n in dep.graph.nodes if n.op in ("Conv", "Gemm")}
    times = profile_nodes(dep.graph.model, 1, dep.graph.input_shapes, weighted, runs=2)
    names = {n.name for n in dep.graph.nodes}
    assert set(times) <= names | {""} and all(t >= 0 for t in times.values())
    assert weighted <= set(times)  # the fused Conv+Relu kernels are the Convs'


def test_curves_from_each_width_and_the_cache_reused(dep, tmp_path, monkeypatch):
    monkeypatch.setattr(latency_profile, "machine_load", lambda: 0.1)  # a quiet machine: the cache is kept
    model = build_profiled_model(dep, threads=1, cache=tmp_path, round_to=2)
    weighted = {n.index for n in dep.graph.nodes if n.op in ("Conv", "Gemm")}
    assert weighted <= set(model.curves)
    assert all(len(model.curves[i].work) == len(GRID) for i in weighted)
    zeros = np.zeros(dep.num_channels)
    kept = [model.kept(select_uniform(dep, zeros, share, 2).removed) for share in GRID]
    assert kept[0] == pytest.approx(1.0) and all(0 < k <= 1.0 for k in kept)
    assert model.measured == len(GRID)
    again = build_profiled_model(dep, threads=1, cache=tmp_path, round_to=2)
    assert again.measured == 0 and again.dense == pytest.approx(model.dense)
    (cache_file,) = tmp_path.glob("profile-*.json")
    cache_file.write_text("{not json")
    assert build_profiled_model(dep, threads=1, cache=tmp_path, round_to=2).measured == len(GRID)
    json.loads(cache_file.read_text())  # rewritten whole


def test_time_proportional_to_macs_costs_every_group_the_same_per_mac(dep):
    costs = CostModel(dep)
    macs = dict(zip(costs.term_nodes, (m for m, _, _ in costs.terms)))
    curves = {i: NodeCurve(np.array([0.0, 1.0]), np.array([0.0, float(m)])) for i, m in macs.items()}
    per_mac = LatencyModel(dep, curves, costs).channel_costs(per_mac=True)
    assert per_mac and all(v == pytest.approx(1.0) for v in per_mac.values())
    # one node twice as slow per MAC: the groups it touches cost more per MAC than 1
    slow = max(macs, key=macs.get)
    curves[slow] = NodeCurve(np.array([0.0, 1.0]), np.array([0.0, 2.0 * macs[slow]]))
    skewed = LatencyModel(dep, curves, costs).channel_costs(per_mac=True)
    assert max(skewed.values()) > 1.0 + 1e-6


def test_a_model_ort_cannot_profile_falls_back_to_nodes_timed_alone(tmp_path, monkeypatch):
    from onnxprune import stages
    from onnxprune.cli.main import main

    def fail(*args, **kwargs):
        raise RuntimeError("cannot save the optimized model")

    monkeypatch.setattr(stages, "build_profiled_model", fail)
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path))
    assert main(["prune", str(DIGITS), "-o", str(tmp_path / "p.onnx"), "--target-latency", "0.7",
                 "--bench-rounds", "1", "-q"]) == 0
    assert (tmp_path / "p.onnx").exists() and list(tmp_path.glob("latency/cpu-*.json"))  # the per-node table


def test_widths_profiled_together_charge_the_same_nodes_as_one_at_a_time(dep):
    """Interleaved runs (one run of each width in turn) keep each width's kernels apart: every
    width's times belong to its own original nodes, the same nodes as when profiled alone."""
    weighted = {n.name for n in dep.graph.nodes if n.op in ("Conv", "Gemm")}
    from onnxprune.apply.rewrite import apply_plan
    from onnxprune.select.latency_profile import profile_interleaved
    half = apply_plan(select_uniform(dep, np.zeros(dep.num_channels), 0.5, 2))
    together = profile_interleaved([dep.graph.model, half], 1, dep.graph.input_shapes, weighted, runs=2)
    alone = [profile_nodes(m, 1, dep.graph.input_shapes, weighted, runs=2) for m in (dep.graph.model, half)]
    assert len(together) == 2
    for mixed, single in zip(together, alone):
        assert set(mixed) == set(single) and weighted <= set(mixed)
        assert all(t >= 0 for t in mixed.values())


def test_a_profile_taken_under_load_is_measured_again_once_the_machine_is_quiet(dep, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(latency_profile, "machine_load", lambda: 12.0)  # busy: profiled, with a warning
    with caplog.at_level("WARNING", logger="onnxprune"):
        assert build_profiled_model(dep, threads=1, cache=tmp_path, round_to=2).measured == len(GRID)
    assert "under a load of 12.0" in caplog.text
    assert build_profiled_model(dep, threads=1, cache=tmp_path, round_to=2).measured == 0  # still busy: kept
    monkeypatch.setattr(latency_profile, "machine_load", lambda: 0.2)
    assert build_profiled_model(dep, threads=1, cache=tmp_path, round_to=2).measured == len(GRID)  # quiet: again
    assert build_profiled_model(dep, threads=1, cache=tmp_path, round_to=2).measured == 0  # a quiet profile is kept


def test_a_model_whose_weights_are_read_from_a_work_file_is_profiled_not_timed_node_by_node(tmp_path, monkeypatch):
    """Weights held in work files have absolute locations, which ONNX Runtime refuses in a serialized
    proto: the profile reads such a model from a spilled file (light_resnet50 fell back to isolated
    node timing under ORT 1.32 before)."""
    from onnxprune import stages
    from onnxprune.load import external

    def fail(*args, **kwargs):
        raise AssertionError("fell back to timing each node alone")

    monkeypatch.setattr(stages, "LAZY_BYTES", 0)
    monkeypatch.setattr(stages, "build_latency_model", fail)
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path))
    bound = []
    real = latency_profile.profile_interleaved

    def watched(models, *args, **kwargs):
        bound.append(any(external.is_bound(t) for t in models[0].graph.initializer))
        return real(models, *args, **{**kwargs, "runs": 1})

    monkeypatch.setattr(latency_profile, "profile_interleaved", watched)
    import onnxprune
    onnxprune.prune(onnx.load(str(DIGITS)), target_latency=0.7, bench_rounds=0)
    assert bound and bound[0]  # the dense model profiled was the one read from its work file


def test_a_profile_is_reused_only_for_the_widths_it_measured(dep, tmp_path, monkeypatch):
    """The cache is keyed by the uniform plans' masks: when the same model and --round-to select other widths
    (wave 19's width steps), the old times are not paired with the new plans."""
    from onnxprune.select import width_step
    monkeypatch.setattr(latency_profile, "machine_load", lambda: 0.1)
    zeros = np.zeros(dep.num_channels)
    before = [select_uniform(dep, zeros, s, 16).removed for s in GRID]
    assert build_profiled_model(dep, threads=1, cache=tmp_path, round_to=16).measured == len(GRID)
    with monkeypatch.context() as m:
        m.setattr(width_step, "_steps", lambda d, r: {g.id: 1 for g in d.groups})  # other widths, same round_to
        dep.__dict__.pop("_width_steps", None)
        assert any(np.any(select_uniform(dep, zeros, s, 16).removed != b) for s, b in zip(GRID, before))
        assert build_profiled_model(dep, threads=1, cache=tmp_path, round_to=16).measured > 0
    dep.__dict__.pop("_width_steps", None)
    assert build_profiled_model(dep, threads=1, cache=tmp_path, round_to=16).measured == 0  # the first widths: kept
