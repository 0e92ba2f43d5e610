"""Search: pruned candidates measured for latency and quality, and their Pareto front (run.py)."""

from onnxprune.search.front import pareto_front
from onnxprune.search.run import PARETO_SCHEMA, evaluate_candidate, search

__all__ = ["search", "evaluate_candidate", "pareto_front", "PARETO_SCHEMA"]
