"""Pruning schedules trained in ONNX Runtime: Pre-Training, In-Training, Post-Training, SET, and
Post-Training with whole channels; `compare` runs them all side by side.

    from onnxprune.schedules import ScheduleOptions, train_schedule
    result = train_schedule(model, data, "set", ScheduleOptions(epochs=20, reinit="kaiming"))
    result.model, result.masks, result.history, result.layers

Modules: layers.py (which weights, re-initialisation), masks.py (magnitude, Erdős–Rényi, prune and
regrow), loop.py (a training run whose masks change between epochs), methods.py (the schedules, as
a table), compare.py (every schedule on one model), measure.py (accuracy, sparsity, size, interleaved
latency, energy: RAPL or a labelled estimate), report.py (the table and the PNG). docs/schedules.md.
"""

from onnxprune.recover.schedules.layers import INITS, Layer, find_layers, reinitialise
from onnxprune.recover.schedules.loop import TrainConfig, TrainingRun
from onnxprune.recover.schedules.masks import er_densities, er_scale, magnitude_mask, prune_and_regrow, random_mask
from onnxprune.recover.schedules.methods import DEFAULT_SPARSITY, SCHEDULES, Schedule, ScheduleOptions, ScheduleResult, train_schedule

__all__ = ["train_schedule", "ScheduleOptions", "ScheduleResult", "Schedule", "SCHEDULES", "DEFAULT_SPARSITY",
           "TrainConfig", "TrainingRun", "Layer", "find_layers", "reinitialise", "INITS", "er_densities",
           "er_scale", "magnitude_mask", "random_mask", "prune_and_regrow"]
