"""tools/make_arch_exports.py: `arch:NAME` resolution in the benches (no torch needed), and, where torch
is importable, that each architecture has its paper's MACs and op mix and exports atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import make_arch_exports as mae  # noqa: E402


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setattr(mae, "CACHE", tmp_path)
    return tmp_path


def test_arch_names_resolve_to_the_cache_or_say_how_to_build_them(cache):
    with pytest.raises(SystemExit, match="unknown arch model 'resnet9'"):
        mae.arch_path("resnet9")
    with pytest.raises(SystemExit, match="not built: run tools/make_arch_exports.py mobilenetv2"):
        mae.arch_path("mobilenetv2")
    onnx.save(onnx.load(str(ROOT / "fixtures" / "chain.onnx")), str(cache / "mobilenetv2.onnx"))
    assert mae.arch_path("mobilenetv2") == cache / "mobilenetv2.onnx"


def test_both_benches_take_arch_names(cache):
    import bench_allocation_pair as bap
    import bench_latency_efficiency as ble
    onnx.save(onnx.load(str(ROOT / "fixtures" / "chain.onnx")), str(cache / "regnety_400mf.onnx"))
    model, shapes = ble.load_dense("arch:regnety_400mf")
    assert isinstance(model, onnx.ModelProto) and shapes is None
    assert bap.model_file("arch:regnety_400mf") == str(cache / "regnety_400mf.onnx")
    with pytest.raises(SystemExit, match="not built"):
        ble.load_dense("arch:efficientnet_b0")


def test_an_unknown_name_is_a_one_line_error_exit_2_and_list_needs_no_torch(cache, capsys):
    assert mae.main(["mobilenetv9"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown arch model 'mobilenetv9'")
    assert mae.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(mae.ARCHS) and all("not built" in line for line in lines)


def test_channels_round_as_mobilenet_does():
    assert [mae.divisible(v) for v in (72 / 4, 120 / 4, 480 / 4, 960 / 4, 3)] == [24, 32, 120, 240, 8]


# MACs at 224x224 as published: MobileNetV2 300M, V3-Large 219M, EfficientNet-B0 390M, RegNetY-400MF 400M,
# MnasNet 1.0 315M (onnxprune's count, convolutions and Gemms)
PUBLISHED = {"mobilenetv2": (300, {"Clip"}), "mobilenetv3_large": (217, {"HardSwish", "HardSigmoid"}),
             "efficientnet_b0": (386, {"Sigmoid", "Mul"}), "regnety_400mf": (402, {"Sigmoid", "Mul"}),
             "mnasnet1_0": (314, {"Relu"})}


@pytest.mark.parametrize("name", list(mae.ARCHS))
def test_each_export_has_its_papers_macs_and_ops(cache, name):
    pytest.importorskip("torch")
    from onnxprune.graph.cost import count_macs
    from onnxprune.graph.model_graph import ModelGraph
    path = mae.export(name, seed=0, out_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == [f"{name}.onnx"]  # no temp file left
    model = onnx.load(str(path))
    macs, ops = PUBLISHED[name]
    assert abs(count_macs(ModelGraph(model)) / 1e6 - macs) < 0.02 * macs
    assert ops <= {n.op_type for n in model.graph.node}
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded in eval mode
