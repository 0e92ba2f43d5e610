"""Pipeline: run passes in order, stop at a missed gate, and report the whole run in one document.

A Pipeline is itself a Pass, so pipelines nest: `Pipeline([Pipeline([...]), Validate()])` in
Python, or `pass = "Pipeline"` with its own `passes` list in a recipe.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import onnx

from onnxprune.errors import BadInputError
from onnxprune.check.gates import Gate, failed
from onnxprune.report.schema import REPORT
from onnxprune.passes.base import Pass, PassContext, PassResult, pass_from_table, register

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


@register
class Pipeline(Pass):
    """`Pipeline([ChannelPruning(0.3), Validate(min_cosine=0.98)]).run(model, context)`.

    Each pass gets the previous pass's model. A pass whose gates fail ends the run (later passes
    would build on a model that is already rejected). With `evaluate` (the default) the final model
    is validated and measured against the context's dense model, so the report carries before/after
    cost, fidelity and latency like a `prune` report, plus one entry per pass.

    Steps are passes or recipe tables (`{"pass": "ChannelPruning", "ratio": 0.3}`). A pipeline is
    functional unless `in_place=True`: it copies its input before the first step that changes its
    input, so in-place steps never reach the caller's model. An in-place pipeline writes its result
    into the model it was given.
    """

    def __init__(self, passes: Sequence[Pass | dict], stop_on_failed_gate: bool = True, in_place: bool = False):
        if not isinstance(passes, Sequence) or isinstance(passes, (str, dict)) or not passes:
            raise BadInputError("a pipeline needs a non-empty list of passes")
        self.passes = [_step(p, i) for i, p in enumerate(passes, 1)]
        self.stop_on_failed_gate = bool(stop_on_failed_gate)
        self._in_place = bool(in_place)

    @property
    def in_place(self) -> bool:  # type: ignore[override]  # per instance, unlike a single pass
        return self._in_place

    @property
    def changes_input(self) -> bool:  # type: ignore[override]
        return self._in_place

    def options(self) -> dict:
        out: dict[str, Any] = {"passes": [{"pass": s.pass_name(), **s.options()} for s in self.passes]}
        if not self.stop_on_failed_gate:
            out["stop_on_failed_gate"] = False
        if self._in_place:
            out["in_place"] = True
        return out

    def call(self, model: onnx.ModelProto, context: PassContext) -> PassResult:
        current, changed, entries, gates = model, False, [], []
        for i, step in enumerate(self.passes):
            log.info("pass %d/%d: %r", i + 1, len(self.passes), step)
            if step.changes_input and current is model and not self._in_place:
                current = _copy(model)  # keep the caller's model as it was
            start = time.perf_counter()
            result = step(current, context)
            entries.append({"name": step.pass_name(), "options": step.options(), "changed": result.changed,
                            "seconds": round(time.perf_counter() - start, 4), "report": result.report})
            current, changed, gates = result.model, changed or result.changed, gates + result.gates
            if self.stop_on_failed_gate and failed(result.gates):
                log.info("stopping after pass %d: a gate failed", i + 1)
                break
        if self._in_place and current is not model:
            model.CopyFrom(current)
            current = model
        report: dict = {}
        plans = [e["report"]["plan"] for e in entries if "plan" in e["report"]]
        if plans:
            report["plan"] = plans[-1]
        report.update(gates=[g.as_dict() for g in gates], passes=entries)
        return PassResult(current, changed, report, gates)

    def run(self, model: onnx.ModelProto, context: PassContext | None = None, evaluate: bool = True) -> PipelineResult:
        """Run the passes (checked like any pass) and report the whole run, evaluated unless told not to."""
        context = context if context is not None else PassContext(dense=model)
        result = self(model, context)
        report: dict = {"schema": REPORT, "input": context.source,
                        "options": {**self.options(), "seed": context.seed,
                                    "input_shapes": {k: list(v) for k, v in context.shapes().items()}}}
        if "plan" in result.report:
            report["plan"] = result.report["plan"]
        if evaluate:
            report.update(_evaluate(context, result.model))
        report["gates"] = result.report["gates"]
        report["passes"] = result.report["passes"]
        return PipelineResult(result.model, report, result.changed, result.gates)


def _step(step: Pass | dict, index: int) -> Pass:
    if isinstance(step, dict):
        return pass_from_table(step, f"pass Pipeline: passes[{index}]")
    if not isinstance(step, Pass):
        raise BadInputError(f"pipeline step {step!r} is not a Pass")
    return step


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _evaluate(context: PassContext, model: onnx.ModelProto) -> dict:
    from onnxprune.check.evaluate import evaluate
    from onnxprune.check.validate import check_valid

    check_valid(model, context.dense)
    return evaluate(context.dense, model, context.shapes(), context.evaluation_data(), context.bench_rounds,
                    context.threads)
