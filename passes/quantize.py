"""Quantize: static int8 (QDQ, per-channel) by ONNX Runtime's quantizer, calibrated on the pipeline's data.

    [[passes]]
    pass = "ChannelPruning"
    target_macs = 0.5

    [[passes]]
    pass = "Quantize"            # after pruning: QDQ nodes are not pruned through
    per_channel = true
    method = "minmax"           # or "entropy", "percentile"
    samples = 64

    [[passes]]
    pass = "Validate"
    min_cosine = 0.98
"""

from __future__ import annotations

import onnx

from onnxprune.apply.quantize import QuantizeSettings, quantize_static_model, quantized_summary
from onnxprune.errors import BadInputError
from onnxprune.passes.base import Pass, PassContext, PassResult, register


@register
class Quantize(Pass):
    """Weights and activations to int8 with QuantizeLinear/DequantizeLinear pairs, which ONNX Runtime
    fuses into integer kernels. Calibration data comes from the context (`calib`, else `data`); the
    quantizer needs real inputs, so synthetic ones are refused. Put it last but for Validate."""

    def __init__(self, activations: str = "uint8", weights: str = "int8", per_channel: bool = True,
                 method: str = "minmax", samples: int = 64, exclude_ops: list[str] | tuple[str, ...] = (),
                 float_tail: bool = True, reduce_range: bool = True):
        if not isinstance(per_channel, bool):
            raise BadInputError(f"pass Quantize: per_channel must be true or false, got {per_channel!r}")
        if isinstance(exclude_ops, str) or not all(isinstance(op, str) for op in exclude_ops):
            raise BadInputError(f"pass Quantize: exclude_ops must be a list of op types, got {exclude_ops!r}")
        for flag, value in (("float_tail", float_tail), ("reduce_range", reduce_range)):
            if not isinstance(value, bool):
                raise BadInputError(f"pass Quantize: {flag} must be true or false, got {value!r}")
        self.settings = QuantizeSettings(activations, weights, per_channel, method, samples, tuple(exclude_ops),
                                         float_tail, reduce_range)

    def options(self) -> dict:
        s = self.settings
        return {"activations": s.activations, "weights": s.weights, "per_channel": s.per_channel,
                "method": s.method, "samples": s.samples, "exclude_ops": list(s.exclude_ops),
                "float_tail": s.float_tail, "reduce_range": s.reduce_range}

    def requires(self, model: onnx.ModelProto, context: PassContext) -> None:
        if context.calib is None and context.data is None:
            raise BadInputError("pass Quantize needs calibration data: give --calib (or `calib` in the recipe)")

    def call(self, model: onnx.ModelProto, context: PassContext) -> PassResult:
        data = context.calibration_data()
        quantized = quantize_static_model(model, data, self.settings)
        report = {"quantization": {**self.options(), **quantized_summary(model, quantized)}}
        return PassResult(quantized, True, report)
