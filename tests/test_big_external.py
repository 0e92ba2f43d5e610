"""A model over 2 GB with external data, for real (issues 11 and 15): loaded without reading its
weights into memory, analysed, pruned, checked by the large-model checker path, written with its
data beside it and run by ONNX Runtime. The 2.2 GB are one embedding table in a sparse file (zeros
but for its first rows), so the test costs seconds and almost no disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli.main import main
from onnxprune.load import external
from onnxprune.load.model import load_model

ROWS, WIDTH, FILLED = 34_375_000, 16, 4096  # 2.2 GB of float32; the first FILLED rows are not zero


def big_embedding_model(folder: Path) -> Path:
    """ids[N, 3] -> Gather(table[ROWS, WIDTH]) -> MatMul -> Relu -> MatMul -> y[N, 3, 4]; the table
    in m.onnx.data (sparse), the small weights inline."""
    rng = np.random.default_rng(0)
    data = folder / "m.onnx.data"
    with open(data, "wb") as f:
        f.write(rng.standard_normal((FILLED, WIDTH)).astype(np.float32).tobytes())
        f.truncate(ROWS * WIDTH * 4)
    table = TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[ROWS, WIDTH],
                        data_location=TensorProto.EXTERNAL)
    for key, value in (("location", data.name), ("offset", "0"), ("length", str(ROWS * WIDTH * 4))):
        table.external_data.add(key=key, value=value)
    w1 = numpy_helper.from_array(rng.standard_normal((WIDTH, 8)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("MatMul", ["e", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4])], [table, w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "m.onnx"
    onnx.save_model(model, str(path))
    return path


def disk_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    return big_embedding_model(tmp_path_factory.mktemp("big"))


def test_loaded_without_reading_the_weights(big):
    model = load_model(big)
    table = model.graph.initializer[0]
    assert external.is_bound(table) and not table.HasField("raw_data")
    assert model.ByteSize() < 10_000
    assert external.read(table)[:FILLED].any() and external.read(table).shape == (ROWS, WIDTH)


def test_pruned_written_beside_checked_and_run(big, tmp_path, capsys):
    out = tmp_path / "out" / "p.onnx"
    # random scores: l2 would read the 2.2 GB table once more (scores on read-on-demand weights are
    # checked value for value by test_read_on_demand_prunes_to_the_same_weights)
    assert main(["prune", str(big), "-o", str(out), "--ratio", "0.3", "--criterion", "random", "--bench-rounds", "0",
                 "-q"]) == 0
    data = out.parent / "p.onnx.data"
    assert sorted(os.listdir(out.parent)) == ["p.onnx", "p.onnx.data"]
    stored = onnx.load(str(out), load_external_data=False)
    table = next(t for t in stored.graph.initializer if t.name == "table")
    kept = table.dims[1]
    assert table.dims[0] == ROWS and 0 < kept < WIDTH
    assert external.info(table)["location"] == "p.onnx.data"  # relative, beside the model
    assert data.stat().st_size >= ROWS * kept * 4 and disk_bytes(data) < 64 << 20  # the zeros stayed holes
    onnx.checker.check_model(str(out))  # the checker by path, as for any model over 2 GB
    dense = ort.InferenceSession(str(big), providers=["CPUExecutionProvider"])
    pruned = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 5, FILLED - 1], [7, ROWS - 1, 100]], np.int64)
    want, got = dense.run(None, {"ids": ids})[0], pruned.run(None, {"ids": ids})[0]
    assert got.shape == want.shape == (2, 3, 4) and np.isfinite(got).all()
    # ONNX Runtime computes from the sliced table in the written file
    pruned_table = np.memmap(data, np.float32, "r", int(external.info(table)["offset"]), (ROWS, kept))
    small = {t.name: numpy_helper.to_array(t) for t in stored.graph.initializer if t.name != "table"}
    expected = np.maximum(np.asarray(pruned_table[ids]) @ small["w1"], 0) @ small["w2"]
    assert np.allclose(got, expected, atol=1e-4) and np.abs(got[0]).max() > 0
    # the table's kept columns are the input's columns, in order
    dense_table = np.memmap(big.parent / "m.onnx.data", np.float32, "r", 0, (ROWS, WIDTH))
    columns = [next(j for j in range(WIDTH) if np.array_equal(dense_table[:FILLED, j], pruned_table[:FILLED, i]))
               for i in range(kept)]
    assert columns == sorted(set(columns))
    assert not pruned_table[FILLED:FILLED + 1000].any()


def _pruned_initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_read_on_demand_prunes_to_the_same_weights(tmp_path, monkeypatch, capsys):
    """The same small transformer pruned with its weights loaded and with them read on demand, a few
    rows at a time (blocks, holes, page padding): the same tensors, value for value."""
    import sys
    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "tools"))
    from make_big_transformer import make
    model = tmp_path / "t.onnx"
    make(str(model), layers=1, hidden=64, ffn=128, heads=2)
    with open(tmp_path / "t.onnx.data", "r+b") as f:  # two zero pages inside the FFN weight: written as holes
        up = next(t for t in onnx.load(str(model), load_external_data=False).graph.initializer
                  if t.name == "layer0.ffn.up.weight")
        f.seek(int(external.info(up)["offset"]) + 8192)
        f.write(bytes(8192))
    argv = ["prune", str(model), "--ratio", "0.3", "--bench-rounds", "0", "-q", "-o"]
    assert main(argv + [str(tmp_path / "loaded.onnx")]) == 0
    monkeypatch.setattr(external, "LAZY_BYTES", 0)
    monkeypatch.setattr(external, "CHUNK", 5000)
    monkeypatch.setattr(external, "PAGE", 4096)
    assert main(argv + [str(tmp_path / "lazy.onnx")]) == 0
    assert os.path.exists(tmp_path / "lazy.onnx.data")  # written as it came: weights beside the model
    loaded, lazy = _pruned_initializers(tmp_path / "loaded.onnx"), _pruned_initializers(tmp_path / "lazy.onnx")
    assert loaded.keys() == lazy.keys()
    assert all(loaded[k].shape == lazy[k].shape and np.array_equal(loaded[k], lazy[k]) for k in loaded)


def test_work_files_of_a_search_go_when_it_ends():
    kept = external.WorkFile("pruned")
    with external.scratch():
        candidate = external.WorkFile("pruned")
        with external.scratch():
            inner = external.WorkFile("pruned")
        assert not os.path.exists(inner.path) and os.path.exists(candidate.path)
    assert not os.path.exists(candidate.path) and os.path.exists(kept.path)
