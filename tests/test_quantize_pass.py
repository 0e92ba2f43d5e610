"""Prune, then quantize: the Quantize pass hands the pruned model to ONNX Runtime's static quantizer
(QDQ, per-channel) calibrated on the pipeline's data; the result runs, is smaller, keeps the digits'
accuracy, and the input model is untouched. Bad options and missing data fail before any work."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune import BadInputError
from onnxprune.load.runtime import session
from onnxprune.passes import ChannelPruning, PassContext, Pipeline, Quantize, Validate, create_pass
from onnxprune.cli.main import main
from onnxprune.report import schema

DIGITS = FIXTURES / "digits_cnn.onnx"


def accuracy(model: onnx.ModelProto) -> float:
    test = np.load(FIXTURES / "digits_test.npz")
    logits = session(model).run(None, {model.graph.input[0].name: test["input"].astype(np.float32)})[0]
    return float(np.mean(logits.argmax(1) == test["labels"]))


def test_prune_then_quantize_keeps_accuracy_and_shrinks_the_model():
    model = onnx.load(str(DIGITS))
    before = model.SerializeToString()
    context = PassContext(model, calib=str(FIXTURES / "digits_calib.npz"), bench_rounds=0)
    pruned = ChannelPruning(target_macs=0.5, criterion="l2", scope="local", recover="lstsq")(model, context).model
    pruned_bytes = pruned.SerializeToString()
    result = Pipeline([Quantize(samples=32), Validate()]).run(pruned, context)
    assert model.SerializeToString() == before and pruned.SerializeToString() == pruned_bytes and result.passed
    schema.check(result.report)
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 3
    quant = result.report["passes"][0]["report"]["quantization"]
    assert quant["quantize_linear"] == ops.count("QuantizeLinear") and quant["per_channel"] is True
    # int8 weights: the file is well under half of the float pruned model's
    assert result.model.ByteSize() < 0.5 * len(pruned_bytes)
    # quantization costs at most 2 points of the pruned model's held-out accuracy
    assert accuracy(result.model) >= accuracy(pruned) - 0.02


def test_quantize_without_data_is_refused_before_any_work():
    model = onnx.load(str(DIGITS))
    with pytest.raises(BadInputError, match="needs calibration data"):
        Quantize()(model, PassContext(model, bench_rounds=0))


@pytest.mark.parametrize("options, message", [
    ({"method": "best"}, "method must be one of"),
    ({"weights": "int4"}, "weights must be one of"),
    ({"samples": 0}, "samples must be a positive integer"),
    ({"per_channel": "yes"}, "per_channel"),
    ({"exclude_ops": "Conv"}, "exclude_ops"),
])
def test_bad_quantize_options_are_one_clear_error(options, message):
    with pytest.raises(BadInputError, match=message):
        create_pass("Quantize", options)


def test_excluded_op_types_stay_float():
    model = onnx.load(str(DIGITS))
    context = PassContext(model, calib=str(FIXTURES / "digits_calib.npz"), bench_rounds=0)
    quantized = Quantize(samples=8, exclude_ops=["Gemm", "MatMul"])(model, context).model
    weights = {n.input[1] for n in quantized.graph.node if n.op_type in ("Gemm", "MatMul")}
    floats = {t.name for t in quantized.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    conv_weights = {n.input[1] for n in quantized.graph.node if n.op_type == "Conv"}
    dequantized = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert weights and weights <= floats  # the linear layer's weights stay float
    assert conv_weights and conv_weights <= dequantized  # the convolutions' are int8


def test_recipe_prunes_then_quantizes(tmp_path):
    recipe = tmp_path / "r.toml"
    out = tmp_path / "out.onnx"
    recipe.write_text(f'''schema = "onnxprune.recipe/1"
input = "{DIGITS}"
output = "{out}"
calibration = "{FIXTURES / 'digits_calib.npz'}"
bench_rounds = 0

[[passes]]
pass = "ChannelPruning"
ratio = 0.25
criterion = "l2"
recover = "none"

[[passes]]
pass = "Quantize"
samples = 8
''')
    assert main(["run", str(recipe), "-q"]) == 0
    written = onnx.load(str(out))
    assert "QuantizeLinear" in {n.op_type for n in written.graph.node}
    session(written)  # loads and initialises in ONNX Runtime


def test_an_opset_11_model_quantizes_per_channel_into_a_model_ort_loads():
    """PaddleOCR's and ddddocr's exports are opset 11-12: ORT's quantizer wrote per-channel
    DequantizeLinear nodes (an `axis` from opset 13) that ONNX Runtime then refused to load."""
    model = onnx.load(str(DIGITS))
    model.opset_import[0].version = 11  # its ops (Conv, Relu, MaxPool, Gemm, ...) read the same at 11
    context = PassContext(model, calib=str(FIXTURES / "digits_calib.npz"), bench_rounds=0)
    quantized = Quantize(samples=16)(model, context).model
    axes = [a for n in quantized.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute if a.name == "axis"]
    assert axes  # still per channel
    assert accuracy(quantized) >= accuracy(model) - 0.02  # loads in ORT and keeps the digits
