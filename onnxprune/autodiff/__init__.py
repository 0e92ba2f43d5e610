"""In-graph training: reverse-mode autodiff to a standard-ONNX training graph, and a numpy trainer.

    tg = build_training_graph(model, loss="distill")  # loss, logits and weight gradients as outputs

The training loop that uses it (fine-tuning with distillation, masks, best-epoch choice) lives in
`onnxprune.recover.finetune`; the `taylor` criterion in `onnxprune.score` uses the gradients too.

Gradient rules live in `rules/` (one module per op family, each with its own `GRADIENTS` table);
`registry.RULES` joins the tables of the modules listed in `registry.RULE_MODULES`;
`check_gradients` compares a model's training graph with float64 finite differences.
"""

from onnxprune.autodiff.builder import TrainingGraph, build_training_graph
from onnxprune.autodiff.gradcheck import GradCheck, check_gradients
from onnxprune.autodiff.optim import AdamW, FlatParams, SGD
from onnxprune.autodiff.registry import NO_GRADIENT, RULES, Rule, register
from onnxprune.autodiff.lr_schedule import constant, cosine, step_decay
from onnxprune.autodiff.weights import read_weights, weights_as_inputs, write_weights

__all__ = ["build_training_graph", "TrainingGraph", "SGD", "AdamW", "FlatParams",
           "cosine", "step_decay", "constant", "check_gradients", "GradCheck", "RULES", "NO_GRADIENT", "Rule",
           "register", "read_weights", "write_weights", "weights_as_inputs"]
