"""`onnxprune sparsify` on a model whose weights are read from its data file (load/external.py binds
them by absolute path when the external data is 64 MB or more): masking read them with onnx's own reader,
which refuses absolute locations, and the MiniLM dynamo export exited 3; the sizes in the report counted
the proto without those bytes."""

from __future__ import annotations

import numpy as np

from onnxprune.api import sparsify
from onnxprune.load.external import unload
from test_check_bound_model import _mlp


def test_a_bound_model_sparsifies_as_the_inline_one():
    inline = sparsify(_mlp(), 0.5)
    bound = sparsify(unload(_mlp(), min_bytes=512), 0.5)
    for key in ("sparsity", "size_bytes", "zip_bytes"):
        assert bound.report["sparsity"][key] == inline.report["sparsity"][key], key
    assert bound.report["dense_zip_bytes"] == inline.report["dense_zip_bytes"]
    assert np.isclose(bound.report["fidelity"]["cosine"], inline.report["fidelity"]["cosine"])
