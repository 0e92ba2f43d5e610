"""Pipeline: run passes in order, stop at a missed gate, and report the whole run in one document."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import onnx

from onnxprune.errors import BadInputError
from onnxprune.check.gates import Gate, failed
from onnxprune.report.schema import REPORT
from onnxprune.passes.base import Pass, PassContext

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """The final model, the combined report (schema onnxprune.report/1) and every gate evaluated."""

    model: onnx.ModelProto
    report: dict
    changed: bool
    gates: list[Gate] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not failed(self.gates)


class Pipeline:
    """`Pipeline([ChannelPruning(0.3), Validate(min_cosine=0.98)]).run(model, context)`.

    Each pass gets the previous pass's model. A pass whose gates fail ends the run (later passes
    would build on a model that is already rejected). With `evaluate` (the default) the final model
    is validated and measured against the context's dense model, so the report carries before/after
    cost, fidelity and latency like a `prune` report, plus one entry per pass.
    """

    def __init__(self, passes: Sequence[Pass], stop_on_failed_gate: bool = True):
        if not passes:
            raise BadInputError("a pipeline needs at least one pass")
        for p in passes:
            if not isinstance(p, Pass):
                raise BadInputError(f"pipeline step {p!r} is not a Pass")
        self.passes = list(passes)
        self.stop_on_failed_gate = stop_on_failed_gate

    def run(self, model: onnx.ModelProto, context: PassContext | None = None, evaluate: bool = True) -> PipelineResult:
        context = context if context is not None else PassContext(dense=model)
        current, changed, entries, gates = model, False, [], []
        for i, step in enumerate(self.passes):
            log.info("pass %d/%d: %r", i + 1, len(self.passes), step)
            start = time.perf_counter()
            result = step(current, context)
            entries.append({"name": step.pass_name(), "options": step.options(), "changed": result.changed,
                            "seconds": round(time.perf_counter() - start, 4), "report": result.report})
            current, changed, gates = result.model, changed or result.changed, gates + result.gates
            if self.stop_on_failed_gate and failed(result.gates):
                log.info("stopping after pass %d: a gate failed", i + 1)
                break
        report: dict = {"schema": REPORT, "input": context.source,
                        "options": {"passes": [{"pass": s.pass_name(), **s.options()} for s in self.passes],
                                    "seed": context.seed,
                                    "input_shapes": {k: list(v) for k, v in context.shapes().items()}}}
        plans = [e["report"]["plan"] for e in entries if "plan" in e["report"]]
        if plans:
            report["plan"] = plans[-1]
        if evaluate:
            report.update(_evaluate(context, current))
        report["gates"] = [g.as_dict() for g in gates]
        report["passes"] = entries
        return PipelineResult(current, report, changed, gates)


def _evaluate(context: PassContext, model: onnx.ModelProto) -> dict:
    from onnxprune.stages import evaluate
    from onnxprune.check.validate import check_valid

    check_valid(model, context.dense)
    return evaluate(context.dense, model, context.shapes(), context.evaluation_data(), context.bench_rounds,
                    context.threads)
