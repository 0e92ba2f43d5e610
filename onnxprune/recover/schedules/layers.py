"""The layers the schedules sparsify, their fan-in, and seeded re-initialisation ("from scratch").

A layer is the float weight (rank >= 2) of a Conv, ConvTranspose, Gemm or MatMul, with its kind
("conv" or "linear", as in `onnxprune.apply.sparsity`) and the bias beside it when the op has one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.autodiff import read_weights, write_weights
from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.apply.sparsity import sparse_weights

# op -> index of the bias input (the weight is input 1 for all of them)
BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}

# name -> (distribution, gain**2): std = sqrt(gain2 / fan) for normal, bound = sqrt(3 * gain2 / fan) for uniform;
# Kaiming uses fan_in (He et al. 2015, for ReLU nets), Glorot the mean of fan_in and fan_out (2010)
INITS = {"kaiming": ("normal", 2.0, "fan_in"), "kaiming-uniform": ("uniform", 2.0, "fan_in"),
         "glorot": ("uniform", 1.0, "fan_avg"), "glorot-normal": ("normal", 1.0, "fan_avg")}


@dataclass(frozen=True)
class Layer:
    name: str                  # the weight's name (initializer or Constant output)
    kind: str                  # "conv" or "linear"
    shape: tuple[int, ...]
    in_axis: int               # the weight's input-channel axis
    bias: str | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def out_axis(self) -> int:
        return 1 - self.in_axis if len(self.shape) >= 2 and self.in_axis in (0, 1) else len(self.shape) - 1

    @property
    def fan_in(self) -> int:
        return self.size // self.shape[self.out_axis]

    @property
    def fan_out(self) -> int:
        return self.size // self.shape[self.in_axis]


def find_layers(model: onnx.ModelProto, g: ModelGraph | None = None) -> list[Layer]:
    """The conv and linear weights of `model` in graph order (BadInputError if it has none)."""
    g = ModelGraph(model) if g is None else g
    weights = sparse_weights(g)
    biases: dict[str, str] = {}
    for node in g.nodes:
        index = BIAS_INPUT.get(node.op)
        bias = node.input(index) if index is not None else None
        if bias is not None and g.const(bias) is not None and node.input(1) is not None:
            biases.setdefault(node.input(1), bias)
    layers = [Layer(w.name, w.kind, tuple(g.const(w.name).shape), w.in_axis, biases.get(w.name)) for w in weights]
    if not layers:
        raise BadInputError("the model has no Conv, ConvTranspose, Gemm or MatMul with a constant float weight "
                            "to sparsify")
    return layers


def reinitialise(model: onnx.ModelProto, layers: list[Layer], method: str = "kaiming",
                 seed: int = 0) -> onnx.ModelProto:
    """A copy of `model` with every layer's weight drawn afresh (seeded) and its bias set to zero.

    Other parameters (normalisation scales and statistics, constants) keep their values.
    """
    if method not in INITS:
        raise BadInputError(f"unknown initialisation '{method}'; choose one of {', '.join(INITS)}")
    dist, gain2, fan = INITS[method]
    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray] = {}
    for layer in layers:
        n = layer.fan_in if fan == "fan_in" else (layer.fan_in + layer.fan_out) / 2.0
        if dist == "normal":
            w = rng.standard_normal(layer.shape) * np.sqrt(gain2 / n)
        else:
            bound = np.sqrt(3.0 * gain2 / n)
            w = rng.uniform(-bound, bound, layer.shape)
        values[layer.name] = w.astype(np.float32)
    biases = [layer.bias for layer in layers if layer.bias is not None]
    for name, b in read_weights(model, biases).items():
        values[name] = np.zeros_like(b)
    return write_weights(model, values)
