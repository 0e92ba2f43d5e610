"""Big graphs evaluated lean. An ONNX Runtime session costs 7-10 KB per node whatever the weights
(most of a 2 GB budget at 200,000 nodes), and the analysis (ModelGraph and Dependency, 4.7 KB per
node) and the two protos (about 1 KB per node each) would sit beside it. So for a graph of more than
ONE_AT_A_TIME_NODES nodes with light weights, once the pruned model exists: the cost before, the
report's header and the plan's summary and JSON are taken from the analysis; the analysis is
released; then the checker runs (its copy of the model, 2-4 KB per node, was beside the analysis
before) and the pruned model's graph counts the cost after; both models are parked in work files
and dropped (load/parked.py); ONNX Runtime builds each session from its file, the dense one first
(its outputs recorded, then released); and the pruned model is read back, unchanged. The report is
the same as `evaluate` gives, key for key."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import onnx

from onnxprune.check.evaluate import (ONE_AT_A_TIME_NODES, ONE_AT_A_TIME_PARAMS, model_costs, one_at_a_time,
                                      record_dense, run_checks)
from onnxprune.check.validate import check_valid
from onnxprune.couple.plan import Plan
from onnxprune.graph.cost import count_params
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.external import has_bound
from onnxprune.load.fold import fold_constants
from onnxprune.load.parked import Parked
from onnxprune.stages import Prepared, describe


class DetachedPlan(Plan):
    """A plan that no longer holds the analysis: its summary, JSON and per-group counts were taken
    while it did (pickled, compact: a 200,000-node chain has 50,000 groups). `dep` is None."""

    def __init__(self, plan: Plan, summary: dict | None = None) -> None:
        super().__init__(None, plan.removed, plan.options)
        self._summary = pickle.dumps(plan.summary() if summary is None else summary)  # describe's, not made twice
        self._json = pickle.dumps(plan.to_json())
        self._kept = np.asarray(plan.kept_per_group, dtype=np.int64).reshape(-1, 2)

    @property
    def kept_per_group(self) -> list[tuple[int, int]]:
        return [(int(k), int(t)) for k, t in self._kept]

    def summary(self) -> dict:
        return pickle.loads(self._summary)

    def to_json(self) -> dict:
        return pickle.loads(self._json)


def wanted(prep: Prepared, evaluation) -> bool:
    """Whether to evaluate lean: a graph one_at_a_time runs alone for its node count, not its weights
    (big weights keep record-before-rewrite: never the pruned weights beside the dense session), held
    whole in memory (no weights read from files, which would not come back as they were; its pruned
    model then has none either)."""
    nodes, params = len(prep.graph.nodes), count_params(prep.graph)
    return (nodes > ONE_AT_A_TIME_NODES and params <= ONE_AT_A_TIME_PARAMS and one_at_a_time(params, evaluation, nodes)
            and not has_bound(prep.model))


class Handover:
    """The caller's only references to the analysis and the pruned model, handed to `evaluate_lean`,
    which takes them out (a callee cannot drop its caller's locals)."""

    def __init__(self, prep: Prepared, plan: Plan, pruned: onnx.ModelProto) -> None:
        self.items = [prep, plan, pruned]

    def take(self) -> tuple[Prepared, Plan, onnx.ModelProto]:
        prep, plan, pruned = self.items
        self.items.clear()
        return prep, plan, pruned


def evaluate_lean(handover: Handover) -> tuple[onnx.ModelProto, DetachedPlan, dict]:
    """The pruned model, its detached plan and the full report (evaluate's fragments and describe's
    header), with nothing of the analysis alive while ONNX Runtime builds its sessions."""
    prep, plan, pruned = handover.take()
    options, evaluation, shapes = prep.options, prep.evaluation, prep.graph.input_shapes
    dense, dense_bytes = prep.model, prep.input_bytes
    # as api.prune: the analysed graph counts the cost before, unless recovery added zero biases to it
    before = model_costs(dense, shapes, prep.graph, dense_bytes) if options.recover == "none" else None
    header = describe(prep, plan)
    plan = DetachedPlan(plan, header["plan"])
    header = pickle.dumps(header)
    del prep
    gc.collect()  # the analysis holds reference cycles: gone now, before the checker and the sessions
    check_valid(pruned, dense)  # apply_and_recover left it to here: the checker's copy without the analysis
    if before is None:
        before = model_costs(dense, shapes, ModelGraph(fold_constants(dense), shapes), dense_bytes)
    after = model_costs(pruned, shapes)
    dense, pruned = Parked(dense), Parked(pruned)
    reference = record_dense(dense, shapes, evaluation, options.bench_rounds, options.threads_capped())
    del dense
    report = run_checks(None, pruned, shapes, evaluation, options.bench_rounds, options.threads_capped(), reference)
    del reference
    report["before"], report["after"] = {**before, **report["before"]}, {**after, **report["after"]}
    report.update(pickle.loads(header))
    return pruned.load(), plan, report
