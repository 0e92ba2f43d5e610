"""The probe graph split into a forward run once per sample and a backward run per probe gives the
gradients the whole probe graph gives (fisher's scores unchanged, the forward no longer repeated)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune.autodiff.probe import build_probe_graph
from onnxprune.autodiff.probe_split import ProbeRunner, split_probe_graph
from onnxprune.load.runtime import session


@pytest.mark.parametrize("name, shape", [("digits_cnn.onnx", None), ("densenet_tiny.onnx", None),
                                         ("crnn_tiny.onnx", None)])
def test_split_gradients_equal_the_whole_graphs(name, shape):
    model = onnx.load(str(FIXTURES / name))
    inp = model.graph.input[0]
    dims = tuple(d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim)
    pg = build_probe_graph(model, input_shapes={inp.name: dims})
    split = split_probe_graph(pg)
    assert split is not None and split.saved  # a forward half, with tensors the backward reads
    assert not {n.name for n in split.forward.graph.node} & {n.name for n in split.backward.graph.node}
    rng = np.random.default_rng(0)
    x = rng.standard_normal(dims).astype(np.float32)
    outs = session(model).run(None, {inp.name: x})
    whole, runner = session(pg.model), ProbeRunner(pg)
    assert runner.split is not None
    runner.forward({inp.name: x})
    names = list(pg.grads.values())
    for _ in range(2):  # two probes on one forward
        probes = {pg.probes[o.name]: rng.standard_normal(v.shape).astype(np.float32)
                  for o, v in zip(model.graph.output, outs) if o.name in pg.probes}
        want = whole.run(names, {inp.name: x, **probes})
        got = runner.gradients(names, probes)
        for a, b in zip(want, got):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(np.abs(a).max() or 1.0))
