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
    assert default_round_to(Target(latency=0.5)) == expected
    assert default_round_to(Target(macs=0.5)) == DEFAULT_ROUND_TO
    assert default_round_to(Target(ratio=0.3)) == DEFAULT_ROUND_TO
    options, _ = options_from_keywords({"target_latency": 0.5})
    assert options.round_to == expected
    options, _ = options_from_keywords({"target_latency": 0.5, "round_to": 4})
    assert options.round_to == 4  # the user's rounding stays
    options, _ = options_from_keywords({"target_macs": 0.5})
    assert options.round_to == DEFAULT_ROUND_TO


def test_the_cli_rounds_a_latency_target_to_the_block_unless_told(monkeypatch):
    from onnxprune.cli.main import build_parser, prune_options
    monkeypatch.setattr(kernel_block, "nchwc_block", lambda: 16)
    parser = build_parser()
    assert prune_options(parser.parse_args(["prune", "m.onnx", "--target-latency", "0.5", "-o", "o.onnx"])).round_to == 16
    assert prune_options(parser.parse_args(["prune", "m.onnx", "--target-latency", "0.5", "--round-to", "8",
                                            "-o", "o.onnx"])).round_to == 8
    assert prune_options(parser.parse_args(["prune", "m.onnx", "--target-macs", "0.5", "-o", "o.onnx"])).round_to == 8


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
