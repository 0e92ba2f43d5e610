"""In-graph training: reverse-mode autodiff to a standard-ONNX training graph, and a numpy trainer.

    tg = build_training_graph(model, loss="distill")         # loss, logits and weight gradients as outputs
    result = finetune(pruned, data, epochs=3, teacher=dense)  # trained weights written back by name

Gradient rules live in `rules/` (one module per op family, registered by op type in `registry.RULES`);
`check_gradients` compares a model's training graph with float64 finite differences.
"""

from onnxprune.recover.autodiff.builder import TrainingGraph, build_training_graph
from onnxprune.recover.autodiff.gradcheck import GradCheck, check_gradients
from onnxprune.recover.autodiff.optim import AdamW, FlatParams, SGD
from onnxprune.recover.autodiff.registry import NO_GRADIENT, RULES, Rule, register
from onnxprune.recover.autodiff.lr_schedule import constant, cosine, step_decay
from onnxprune.recover.autodiff.trainer import FinetuneResult, finetune
from onnxprune.recover.autodiff.weights import read_weights, weights_as_inputs, write_weights

__all__ = ["build_training_graph", "TrainingGraph", "finetune", "FinetuneResult", "SGD", "AdamW", "FlatParams",
           "cosine", "step_decay", "constant", "check_gradients", "GradCheck", "RULES", "NO_GRADIENT", "Rule",
           "register", "read_weights", "write_weights", "weights_as_inputs"]
