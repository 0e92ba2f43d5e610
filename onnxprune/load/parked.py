"""A model parked in a private work file and dropped from memory, for ONNX Runtime to build its
session from the file while Python holds nothing of the model (big graphs: a 200,000-node proto is
about 200 MB, and the session alone is most of a 2 GB budget). `load()` reads it back unchanged."""

from __future__ import annotations

import os

import onnx

from onnxprune.load.workdirs import PrivateDir


class Parked:
    """`model` written to a work file; what session building asks of a model is kept beside the path
    (node count, constants and size, the index limits of synthetic inputs), so
    nothing reads the file again until `load()`. The caller drops its own references to the model.
    Only for models held whole in memory (no weights read from files, under 2 GB): those come back
    byte for byte."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnxprune.load.data import index_limits
        self._folder = PrivateDir("parked")
        self.path = os.path.join(self._folder.name, "model.onnx")
        _write(model, self.path)
        self.nodes = len(model.graph.node)
        self.params = sum(_elements(t) for t in model.graph.initializer)
        self.constants = len(model.graph.initializer) + sum(1 for n in model.graph.node if n.op_type == "Constant")
        self.size = os.path.getsize(self.path)  # model_bytes of a model held whole: its serialized size, here written
        self.index_limits = index_limits(model)

    def load(self) -> onnx.ModelProto:
        """The model as it was parked; the work file is removed."""
        model = onnx.load(self.path, load_external_data=False)
        self._folder.cleanup()
        return model


def _elements(t: onnx.TensorProto) -> int:
    count = 1
    for d in t.dims:
        count *= d
    return count


def _write(model: onnx.ModelProto, path: str) -> None:
    """onnx.save_model's bytes without its Python walk over every tensor for external data to write (a
    model held whole has none; 0.5 s per save of a 100,000-node graph)."""
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        onnx.save_model(model, path)
        return
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
