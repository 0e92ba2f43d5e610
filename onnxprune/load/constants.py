"""What a model's constants are: every stored tensor, the constants it defines, and which nodes
compute only from constants (so folding may evaluate them)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.load.tensors import bodies

# ops whose output differs from run to run even with constant inputs
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                    "Bernoulli"}
NEVER_FOLD = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Constant", "If", "Loop", "Scan",
              "SequenceConstruct", "SequenceEmpty", "Optional"} | NONDETERMINISTIC
MIN_IR_VERSION = 4  # the first IR version in which initializers need not be graph inputs


def constant_values(model: onnx.ModelProto) -> dict[str, onnx.TensorProto | onnx.NodeProto]:
    """Name -> the initializer or Constant node that defines it."""
    found: dict = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            found[node.output[0]] = node
    return found


def foldable(node: onnx.NodeProto, constant: set[str]) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type in NEVER_FOLD:
        return False
    if bodies(node):
        return False
    inputs = [t for t in node.input if t]
    return bool(inputs) and all(t in constant for t in inputs)


def constant_value(defn) -> np.ndarray:
    if isinstance(defn, onnx.TensorProto):
        from onnxprune.load.external import is_bound, read
        return np.array(read(defn)) if is_bound(defn) else numpy_helper.to_array(defn)
    from onnx.reference import ReferenceEvaluator  # Constant nodes have several attribute spellings
    return np.asarray(ReferenceEvaluator(defn).run(None, {})[0])
