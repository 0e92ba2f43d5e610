"""Static int8 quantization after pruning, by ONNX Runtime's own quantizer.

The quantization itself is `onnxruntime.quantization.quantize_static` (QDQ format, per-channel
weights, calibrated on the same data that drove pruning); this module only adapts our Dataset to
its CalibrationDataReader, runs ORT's recommended pre-processing, and keeps the caller's model
untouched (ORT works on files: the model goes through a temporary folder that is removed after).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.errors import BadInputError, first_line
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.load.workdirs import PrivateDir
from onnxprune.load.spill import SPILL_BYTES, model_bytes, write_with_external_data

log = logging.getLogger("onnxprune")

# the quantizer's names for what a user writes in a recipe
QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}
CALIBRATE_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@dataclass(frozen=True)
class QuantizeSettings:
    """What a user chooses. QDQ and per-channel weights as ONNX Runtime recommends for CNNs; uint8
    activations with 7-bit weights (reduce_range) because on x86 without VNNI (AVX2) ORT's s8s8 QDQ
    kernels ran NudeNet at 1.8x the float latency and u8s8 at 0.65x, and full-range u8s8 saturates
    (face F1 vs dense 70.6 against 75.0 with reduce_range; tools/bench_quantize.py)."""

    activations: str = "uint8"
    weights: str = "int8"
    per_channel: bool = True
    method: str = "minmax"
    samples: int = 64  # calibration samples fed to the quantizer
    exclude_ops: tuple[str, ...] = ()
    float_tail: bool = True  # keep the nodes after the last weighted layer (decoding, post-processing) float
    reduce_range: bool = True  # 7-bit weights: avoids u8s8 saturation on x86 without VNNI

    def __post_init__(self):
        for name, value, allowed in (("activations", self.activations, QUANT_TYPES),
                                     ("weights", self.weights, QUANT_TYPES),
                                     ("method", self.method, CALIBRATE_METHODS)):
            if value not in allowed:
                raise BadInputError(f"quantize: {name} must be one of {', '.join(allowed)}, got {value!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise BadInputError(f"quantize: samples must be a positive integer, got {self.samples!r}")


class _Reader:
    """ORT's CalibrationDataReader protocol over a Dataset, one sample per call (batch 1, so the
    calibrator's range statistics do not depend on how the data was batched)."""

    def __init__(self, data: Dataset, limit: int):
        self._batches = data.take(min(limit, len(data))).batches(1)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # part of the protocol; one pass is all static quantization needs
        pass


def quantize_static_model(model: onnx.ModelProto, data: Dataset, settings: QuantizeSettings | None = None,
                          ) -> onnx.ModelProto:
    """`model` with QDQ int8 weights and activations, calibrated on `data`; `model` is not modified."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    settings = settings or QuantizeSettings()
    if len(data) == 0:
        raise BadInputError("quantize: the calibration data is empty; give --calib samples for the quantizer")
    model, settings = _per_channel_opset(model, settings)
    large = model_bytes(model) > SPILL_BYTES
    with PrivateDir("quant") as folder:
        source, prepared, output = (os.path.join(folder, n) for n in ("in.onnx", "prep.onnx", "out.onnx"))
        if large:
            write_with_external_data(model, source, "in.onnx.data")
        else:  # ORT's pre-processing copies the file alone, losing external data beside it
            with open(source, "wb") as f:
                f.write(model.SerializeToString())
        try:
            # ORT's advice: fold and infer shapes first, or the quantizer misses ops it cannot type
            quant_pre_process(source, prepared, skip_symbolic_shape=True, save_as_external_data=large)
        except Exception as exc:  # noqa: BLE001  (pre-processing is an optimisation, not a must)
            log.warning("quantize: ONNX Runtime's pre-processing failed (%s); quantizing without it", first_line(exc))
            prepared = source
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their progress
                quantize_static(prepared, output, _Reader(data, settings.samples), quant_format=QuantFormat.QDQ,
                                per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                                activation_type=getattr(QuantType, QUANT_TYPES[settings.activations]),
                                weight_type=getattr(QuantType, QUANT_TYPES[settings.weights]),
                                calibrate_method=getattr(CalibrationMethod, CALIBRATE_METHODS[settings.method]),
                                op_types_to_quantize=_op_types(prepared, settings.exclude_ops),
                                nodes_to_exclude=tail_nodes(onnx.load(prepared, load_external_data=False))
                                if settings.float_tail else None,
                                use_external_data_format=large)
        except Exception as exc:  # noqa: BLE001  (ORT raises plain Exceptions for unsupported graphs)
            raise BadInputError(f"quantize: ONNX Runtime's quantizer failed: {first_line(exc)}") from exc
        _loads_in_ort(output)
        quantized = onnx.load(output, load_external_data=True)
    return quantized


PER_CHANNEL_OPSET = 13  # DequantizeLinear's `axis` (per-channel scales) exists from opset 13 on


def _per_channel_opset(model: onnx.ModelProto, settings: QuantizeSettings) -> tuple[onnx.ModelProto, QuantizeSettings]:
    """ORT's quantizer writes per-channel DequantizeLinear nodes with `axis` into a model of any opset,
    which ONNX Runtime then refuses to load below opset 13 (PaddleOCR's and ddddocr's exports are
    opset 11-12). Such a model is converted to opset 13 first; where the converter fails, the
    weights are quantized per tensor instead, with a warning."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), PER_CHANNEL_OPSET)
    if not settings.per_channel or opset >= PER_CHANNEL_OPSET:
        return model, settings
    from onnx import version_converter
    try:
        converted = version_converter.convert_version(model, PER_CHANNEL_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:  # noqa: BLE001  (the converter raises plain errors for ops it cannot adapt)
        log.warning("quantize: opset %d has no per-channel DequantizeLinear and converting to opset %d failed "
                    "(%s); quantizing the weights per tensor", opset, PER_CHANNEL_OPSET, first_line(exc))
        return model, dataclasses.replace(settings, per_channel=False)
    log.info("quantize: opset %d converted to %d for per-channel weights", opset, PER_CHANNEL_OPSET)
    return converted, settings


def _loads_in_ort(path: str) -> None:
    """Refuse rather than emit a quantized model ONNX Runtime cannot load."""
    try:
        session(path)
    except BadInputError as exc:
        raise BadInputError(f"quantize: the quantized model: {exc}; try per_channel = false or exclude_ops "
                            "for the op named") from None


def _op_types(path: str, exclude: tuple[str, ...]) -> list[str] | None:
    """Every op type of the model but the excluded ones; None (the quantizer's default set) if none."""
    if not exclude:
        return None
    ops = {node.op_type for node in onnx.load(path, load_external_data=False).graph.node}
    return sorted(ops - set(exclude))


WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "Attention"})


def tail_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes no weighted layer follows: a detector's box decoding, a classifier's
    softmax. One int8 scale for a tensor that mixes pixel coordinates with probabilities (YOLO's
    output concat) rounds every probability to zero, and the tail is cheap to leave in float."""
    producer = {out: node for node in model.graph.node for out in node.output}
    feeds_weights: set[int] = set()
    stack = [node for node in model.graph.node if node.op_type in WEIGHTED]
    while stack:  # walk upstream from every weighted layer: all that is reached feeds one
        node = stack.pop()
        if id(node) in feeds_weights:
            continue
        feeds_weights.add(id(node))
        stack.extend(producer[t] for t in node.input if t in producer)
    return [node.name for node in model.graph.node if id(node) not in feeds_weights and node.name]


def quantized_summary(before: onnx.ModelProto, after: onnx.ModelProto) -> dict:
    """How many nodes ORT quantized (QuantizeLinear pairs inserted), for the pass's report."""
    quant = sum(node.op_type == "QuantizeLinear" for node in after.graph.node)
    dequant = sum(node.op_type == "DequantizeLinear" for node in after.graph.node)
    return {"nodes_before": len(before.graph.node), "nodes_after": len(after.graph.node),
            "quantize_linear": quant, "dequantize_linear": dequant}
