"""A model handed over in memory: the copy folding makes of it is ours, so its weights go to a work
file like a loaded model's (VGG-19's generated weights: 1.1 GB held twice before), while the caller's
proto stays byte for byte as it was and the pruned model is the same, handed back whole in memory."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

import onnxprune
from conftest import FIXTURES
from onnxprune import stages
from onnxprune.load import external
from onnxprune.load.data import load_npz


def _pruned(monkeypatch, lazy_bytes: int, bound: list[bool]):
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    before = model.SerializeToString()
    data = load_npz(FIXTURES / "digits_calib.npz", {"input": 4}).take(32)
    monkeypatch.setattr(stages, "LAZY_BYTES", lazy_bytes)
    prepare = stages.prepare

    def watched(*args, **kwargs):
        prep = prepare(*args, **kwargs)
        bound.append(any(external.is_bound(t) for t in prep.model.graph.initializer))
        return prep
    monkeypatch.setattr(onnxprune.api, "prepare", watched)
    result = onnxprune.prune(model, target_macs=0.6, calib=data, bench_rounds=0)
    assert model.SerializeToString() == before  # the caller's model is never modified
    assert not any(external.is_bound(t) for t in result.model.graph.initializer)  # handed back whole
    return {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}


def test_in_memory_model_is_read_from_a_work_file_and_pruned_the_same(monkeypatch):
    held, unloaded = [], []
    inline = _pruned(monkeypatch, 1 << 62, held)
    lazy = _pruned(monkeypatch, 0, unloaded)
    assert held == [False] and unloaded == [True]
    assert inline.keys() == lazy.keys()
    for name in inline:
        np.testing.assert_array_equal(inline[name], lazy[name])


def test_a_result_pruned_from_a_file_saves_whole(tmp_path, monkeypatch):
    """Weights read on demand from a loaded file stay in work files in `result.model`; `result.save`
    writes a model that ONNX Runtime runs on its own, computing what the result computes."""
    import onnxruntime as ort
    monkeypatch.setattr(external, "LAZY_BYTES", 0)  # every loaded weight read on demand
    monkeypatch.setattr(stages, "LAZY_BYTES", 0)
    data = load_npz(FIXTURES / "digits_calib.npz", {"input": 4}).take(32)
    result = onnxprune.prune(str(FIXTURES / "digits_cnn.onnx"), target_macs=0.6, calib=data, bench_rounds=0)
    assert any(external.is_bound(t) for t in result.model.graph.initializer)
    out = result.save(tmp_path / "small.onnx")
    saved = onnx.load(str(out))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in saved.graph.initializer)
    x = data.batch(0, 4)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, x)[0]
    with external.inlined(result.model):
        want = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_array_equal(got, want)
