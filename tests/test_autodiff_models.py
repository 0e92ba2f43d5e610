"""Whole models with recurrent layers and fused transformer ops: every weight trains, and the gradients
match float64 finite differences (a sample of weights on the larger ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune.autodiff import build_training_graph
from onnxprune.autodiff.gradcheck import check_gradients

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RNG = np.random.default_rng(3)


def float_weights(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) >= 1}


def test_cnn_lstm_gru_fixture_trains_every_weight():
    """fixtures/rnn_tiny.onnx (make_recurrent_models.py): Conv, bidirectional LSTM, GRU, MatMul head."""
    model = onnx.load(FIXTURES / "rnn_tiny.onnx")
    tg = build_training_graph(model, loss="mse")
    assert not tg.frozen and not tg.frozen_summary
    assert set(tg.trainable) == float_weights(model)
    x = RNG.standard_normal((2, 1, 8, 12)).astype(np.float32)
    result = check_gradients(model, {"input": x}, coords=4)
    assert set(result.errors) == float_weights(model) and result.worst < 1e-3, result.errors


def test_pytorch_crnn_export_trains_every_weight():
    """The TorchScript export of a CNN + bidirectional LSTM (batch_first) used to freeze the CNN."""
    model = onnx.load(FIXTURES / "crnn_tiny.onnx")
    tg = build_training_graph(model, loss="mse")
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    assert not tg.frozen and conv_weights <= set(tg.trainable)


def test_ort_optimized_bert_trains_every_weight():
    """EmbedLayerNormalization, Attention (with the mask index it gets), SkipLayerNormalization, BiasGelu."""
    model = onnx.load(FIXTURES / "transformers" / "bert_tiny_ort.onnx")
    ids = RNG.integers(0, 100, (2, 8)).astype(np.int64)
    mask = np.ones((2, 8), np.int64)
    mask[1, 6:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((2, 8), np.int64)}
    tg = build_training_graph(model, loss="mse", input_shapes={k: v.shape for k, v in feeds.items()})
    assert not tg.frozen and len(tg.trainable) == 29
    assert check_gradients(model, feeds, coords=4, max_weights=6).worst < 1e-3


@pytest.mark.real
def test_ddddocr_lstm_model_has_no_frozen_weight():
    from onnxprune.load import zoo
    try:
        path = zoo.fetch("ddddocr_common")
    except Exception as exc:  # offline and not cached
        pytest.skip(f"ddddocr_common is not available: {exc}")
    tg = build_training_graph(str(path), loss="distill", input_shapes={"input1": (1, 1, 64, 128)})
    assert not tg.frozen and len(tg.trainable) == 47
