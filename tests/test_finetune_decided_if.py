"""Fine-tuning through Ifs the samples' shapes decide (silero_vad_if, silero_vad_half, oww_hey_jarvis:
"If has no gradient rule", nothing before the If trained): training runs on the decided view, as
fisher probes it (score/branch_outputs.decided_view), and the trained weights are written back into
the model as given, its Ifs kept, a weight inside the branch taken written back into that branch."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.finetune import finetune
from test_decided_ifs import _decided_model, _feeds


def _with_branch_weight():
    """The decided model with its taken branch (then) a MatMul by its own initializer 'wb'."""
    model = _decided_model()
    wb = numpy_helper.from_array(np.eye(8, dtype=np.float32) * 0.5, "wb")
    then = helper.make_graph([helper.make_node("MatMul", ["b", "wb"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 8])], [wb])
    node = next(n for n in model.graph.node if n.op_type == "If")
    next(a for a in node.attribute if a.name == "then_branch").g.CopyFrom(then)
    return model


def _weights(model):
    found = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        for a in node.attribute:
            if a.type == a.GRAPH:
                found.update({i.name: numpy_helper.to_array(i) for i in a.g.initializer})
    return found


def _data(n: int) -> Dataset:
    feeds = _feeds(n)
    return Dataset({"x": np.stack([f["x"] for f in feeds]), "rate": np.stack([f["rate"] for f in feeds])})


def test_layers_before_a_decided_if_train_and_the_if_stays():
    teacher, student = _with_branch_weight(), _with_branch_weight()
    w1 = next(i for i in student.graph.initializer if i.name == "w1")
    w1.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w1) * 0.7, "w1"))  # the student starts off
    result = finetune(student, _data(32), 6, teacher=teacher, lr=3e-3, batch_size=8, progress=False)
    assert {"w1", "w2", "wb"} <= set(result.trainable)  # before the If, and inside the branch taken
    assert any(n.op_type == "If" for n in result.model.graph.node)  # the model as given: its If kept
    before, after = _weights(student), _weights(result.model)
    assert set(after) == set(before)  # no weight hoisted out of its branch
    assert not np.array_equal(after["w1"], before["w1"]) and not np.array_equal(after["wb"], before["wb"])
    assert result.best_epoch and result.best_epoch > 0
    feed = _feeds(1)[0]
    out = session(result.model).run(None, feed)[0]
    assert out.shape == (1, 3) and np.isfinite(out).all()
