"""A latency target rounds widths to the channel block of ONNX Runtime's CPU convolutions when no
--round-to is given; other targets and an explicit rounding are unchanged. No timing asserted."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from onnxprune.options import DEFAULT_ROUND_TO, Target, default_round_to, options_from_keywords
from onnxprune.select import kernel_block
from onnxprune.select.kernel_block import block_for


def test_the_block_follows_the_widest_vector_flag():
    assert block_for({"fpu", "avx", "avx2", "avx512f", "avx512bw"}) == 16
    assert block_for({"sse4_2", "avx", "avx2", "fma"}) == 8
    assert block_for({"neon", "asimd"}) is None
    assert block_for(set()) is None


@pytest.mark.parametrize("block, expected", [(16, 16), (8, DEFAULT_ROUND_TO), (None, DEFAULT_ROUND_TO)])
def test_only_a_latency_target_takes_the_block_and_never_below_the_default(monkeypatch, block, expected):
    monkeypatch.setattr(kernel_block, "nchwc_block", lambda: block)
    widths = [32, 64, 64, 128]
    assert default_round_to(Target(latency=0.5), widths) == expected
    assert default_round_to(Target(macs=0.5), widths) == DEFAULT_ROUND_TO
    assert default_round_to(Target(ratio=0.3), widths) == DEFAULT_ROUND_TO


def test_widths_off_the_block_keep_the_default(monkeypatch):
    monkeypatch.setattr(kernel_block, "nchwc_block", lambda: 16)
    assert default_round_to(Target(latency=0.5), [17, 34, 34, 17]) == DEFAULT_ROUND_TO  # ShuffleNet's groups
    assert default_round_to(Target(latency=0.5), [64, 64, 64, 64, 24]) == 16  # 256 of 280 channels aligned
    assert default_round_to(Target(latency=0.5), [64, 40, 40]) == DEFAULT_ROUND_TO  # 64 of 144
    assert default_round_to(Target(latency=0.5), []) == DEFAULT_ROUND_TO


def test_unset_rounding_is_filled_when_the_model_is_analysed_and_a_given_one_stays(monkeypatch, tmp_path):
    import onnxprune
    from conftest import FIXTURES
    from onnxprune.cli.main import build_parser, prune_options
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(kernel_block, "nchwc_block", lambda: 16)
    assert options_from_keywords({"target_latency": 0.5})[0].round_to is None
    parser = build_parser()
    assert prune_options(parser.parse_args(["prune", "m.onnx", "--target-latency", "0.5", "-o", "o"])).round_to is None
    assert prune_options(parser.parse_args(["prune", "m.onnx", "--target-latency", "0.5", "--round-to", "4",
                                            "-o", "o"])).round_to == 4
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))  # groups of 32, 64 and 64 channels
    common = dict(criterion="l2", scope="global", recover="none", bench_rounds=0, threads=1)
    assert onnxprune.prune(model, target_latency=0.7, **common).plan.options["round_to"] == 16
    assert onnxprune.prune(model, target_latency=0.7, round_to=4, **common).plan.options["round_to"] == 4
    assert onnxprune.prune(model, target_macs=0.7, **common).plan.options["round_to"] == DEFAULT_ROUND_TO


def test_onnx_runtime_pads_a_width_between_blocks_instead_of_leaving_its_blocked_kernels():
    """What the rounding rests on: a 24-wide Conv stays an NCHWc Conv (padded to 32 with a 16 block)."""
    if kernel_block.nchwc_block() is None:
        pytest.skip("no NCHWc on this CPU")
    w = numpy_helper.from_array(np.ones((24, 32, 3, 3), np.float32), "W")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", 1, [1, 32, 16, 16])],
                              [helper.make_tensor_value_info("y", 1, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as d:
        opts.optimized_model_filepath = os.path.join(d, "o.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        ops = [(n.domain, n.op_type) for n in onnx.load(opts.optimized_model_filepath).graph.node]
    assert ("com.microsoft.nchwc", "Conv") in ops
