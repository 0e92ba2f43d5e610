"""In-graph training: reverse-mode autodiff to a standard-ONNX training graph, and a numpy trainer.

    tg = build_training_graph(model, loss="distill")      # loss + weight gradients as outputs
    result = finetune(model, data, epochs=3, teacher=dense) # trained weights written back by name
"""

from .builder import TrainingGraph, build_training_graph
from .registry import NO_GRADIENT, RULES, Rule, register
from .weights import read_weights, weights_as_inputs, write_weights

__all__ = ["build_training_graph", "TrainingGraph", "RULES", "NO_GRADIENT", "Rule", "register",
           "read_weights", "write_weights", "weights_as_inputs"]
