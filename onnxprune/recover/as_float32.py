"""A float16 model's float32 twin, for training: the weights train in float32 and are written back
into the float16 model (autodiff/weights.write_weights casts to each initializer's type).

onnxconverter-common's float16 models (orinet_fp16) keep float32 inputs and outputs and cast inside;
the in-graph optimizer holds its weights in one float32 buffer (autodiff/optim.py), so such a model
could not be fine-tuned at all. Small float16 updates would also round away (a step of 1e-4 on a
weight of 1.0 is below float16's resolution there), so the training itself runs in float32: every
float16 initializer, Constant, ConstantOfShape value, Cast target, dtype attribute and type annotation
becomes float32, names unchanged. A float16 interface would change what the data and the teacher
feed, so it is refused with one line.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, numpy_helper

from onnxprune.errors import BadInputError
from onnxprune.load.external import tensor_value
from onnxprune.load.tensors import all_graphs, all_tensors

HALF, FULL = TensorProto.FLOAT16, TensorProto.FLOAT
TYPE_ATTRIBUTES = ("to", "dtype")  # Cast's target; RandomNormal, EyeLike, ... output types


def has_half_weights(model: onnx.ModelProto) -> bool:
    """Whether any initializer or Constant node of the main graph holds float16 values."""
    g = model.graph
    return any(i.data_type == HALF for i in g.initializer) or any(
        a.type == onnx.AttributeProto.TENSOR and a.t.data_type == HALF
        for n in g.node if n.op_type == "Constant" for a in n.attribute)


def float32_twin(model: onnx.ModelProto, what: str = "the model") -> onnx.ModelProto | None:
    """A float32 copy of a float16 model (None when it holds no float16 weights)."""
    if not has_half_weights(model):
        return None
    io = [v.name for v in [*model.graph.input, *model.graph.output] if v.type.tensor_type.elem_type == HALF]
    if io:
        raise BadInputError(f"{what} has float16 inputs or outputs ('{io[0]}'); fine-tuning trains float16 weights "
                            "in float32 behind a float32 interface (onnxconverter-common's keep_io_types=True)")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in all_tensors(out):
        if t.data_type == HALF:
            t.CopyFrom(numpy_helper.from_array(tensor_value(t).astype("float32"), t.name))
    for graph in all_graphs(out.graph):
        for info in [*graph.input, *graph.output, *graph.value_info]:
            if info.type.tensor_type.elem_type == HALF:
                info.type.tensor_type.elem_type = FULL
        for a in (a for node in graph.node for a in node.attribute):
            if a.type == onnx.AttributeProto.INT and a.name in TYPE_ATTRIBUTES and a.i == HALF:
                a.i = FULL
    return out
