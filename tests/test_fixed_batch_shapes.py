"""A shape the graph computes from its input stays computed after pruning, even when the export fixed the
input's batch at 1 (ddddocr's common.onnx): folding it would pin the LSTM's initial state to batch 1, and
training several samples per step (recover/batch_view.py) would then fail on the pruned model."""

from __future__ import annotations

import numpy as np
import onnx

from conftest import FIXTURES
from onnxprune.api import prune
from onnxprune.load.runtime import session
from onnxprune.recover.batch_view import batch_view


def test_a_pruned_lstm_model_exported_at_batch_1_still_runs_several_samples_per_step():
    model = onnx.load(str(FIXTURES / "crnn_tiny.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # as ddddocr exports it
    x = np.random.default_rng(0).standard_normal((4, 1, 1, 32, 64)).astype(np.float32)
    result = prune(model, ratio=0.5, criterion="l2", scope="local", recover="none", bench_rounds=0)
    lstm = next(n for n in result.model.graph.node if n.op_type == "LSTM")
    hidden = next(a.i for a in lstm.attribute if a.name == "hidden_size")
    dense_hidden = next(a.i for a in next(n for n in model.graph.node if n.op_type == "LSTM").attribute
                        if a.name == "hidden_size")
    assert hidden < dense_hidden  # the recurrent width was pruned, so its initial state's shape changed
    view = batch_view(result.model, [{"input": x[0]}, {"input": x[1]}])
    assert view is not None
    joined = session(view).run(None, {"input": x[:2].reshape(2, 1, 32, 64)})[0]
    single = session(view).run(None, {"input": x[1]})[0]  # batch-first, as the view puts it
    assert joined.shape[0] == 2
    np.testing.assert_allclose(joined[1:2], single, rtol=1e-4, atol=1e-5)
