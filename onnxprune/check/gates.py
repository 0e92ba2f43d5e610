"""Quality gates: opt-in thresholds on fidelity and accuracy that a build pipeline can rely on.

Without thresholds nothing is gated (validity is checked elsewhere and is never optional). With
them, each gate becomes a record {name, threshold, value, passed} in the report, and a missed gate
is an error (exit 1) whose one-line message names the figure, its value and the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxprune.errors import BadInputError, ValidationError


class GateError(ValidationError):
    """A requested quality gate was missed (exit 1)."""


@dataclass(frozen=True)
class Gate:
    """One evaluated threshold. `flag` is how the user set it (`--min-cosine`, or a recipe key)."""

    name: str
    comparison: str  # ">=" (a minimum) or "<=" (a maximum)
    threshold: float
    value: float
    passed: bool
    flag: str
    label: str
    unit: str = ""
    digits: int = 4

    def as_dict(self) -> dict:
        return {"name": self.name, "comparison": self.comparison, "threshold": self.threshold,
                "value": self.value, "passed": self.passed, "flag": self.flag}

    def message(self) -> str:
        """`cosine 0.9123 < --min-cosine 0.99`: the figure, its value, the broken bound."""
        broken = "<" if self.comparison == ">=" else ">"
        value, threshold = _distinct(self.value, self.threshold, self.digits)
        return f"{self.label} {value}{self.unit} {broken} {self.flag} {threshold}"


def _distinct(value: float, threshold: float, least: int = 4) -> tuple[str, str]:
    """Format both numbers with the fewest decimals (at least `least`) that tell them apart."""
    for digits in range(least, 12):
        a, b = f"{value:.{digits}f}", f"{threshold:.{digits}f}"
        if a != b:
            return a, f"{threshold:g}" if float(f"{threshold:g}") == threshold else b
    return f"{value!r}", f"{threshold!r}"


def check_thresholds(min_cosine: float | None, max_drop: float | None, flags: tuple[str, str]) -> None:
    """Refuse thresholds that can never mean anything (exit 2), before any work is done."""
    if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:
        raise BadInputError(f"{flags[0]} must be a cosine between -1 and 1, got {min_cosine}")
    if max_drop is not None and not 0.0 <= max_drop <= 100.0:
        raise BadInputError(f"{flags[1]} is an accuracy drop in percentage points (0 to 100), got {max_drop}")


def evaluate_gates(fidelity: dict, min_cosine: float | None = None, max_drop: float | None = None,
                   flags: tuple[str, str] = ("--min-cosine", "--max-drop")) -> list[Gate]:
    """Gate records for the thresholds that were given, from a report's `fidelity` section.

    `max_drop` is in percentage points of top-1 accuracy (dense minus pruned), so it needs labelled
    data and a classifier output; without them it is a usage error (exit 2), never a silent pass.
    """
    check_thresholds(min_cosine, max_drop, flags)
    gates = []
    if min_cosine is not None:  # every output (and part) must follow the dense model, not just their concatenation
        name, value = worst_output(fidelity)
        label = f"cosine of output '{name}'" if name else "cosine"
        gates.append(Gate("cosine", ">=", float(min_cosine), value, value >= min_cosine, flags[0], label))
    if max_drop is not None:
        if "accuracy_dense" not in fidelity or "accuracy_pruned" not in fidelity:
            raise BadInputError(f"{flags[1]} needs labelled data: give a .npz with a 'labels' array (one per "
                                "sample) for a model whose first output is N x classes")
        drop = round((float(fidelity["accuracy_dense"]) - float(fidelity["accuracy_pruned"])) * 100.0, 6)
        gates.append(Gate("accuracy_drop", "<=", float(max_drop), drop, drop <= max_drop, flags[1],
                          "accuracy drop", " points", 2))
    return gates


def worst_output(fidelity: dict) -> tuple[str, float]:
    """(name, cosine) of the output, or the part of one (fidelity.py: a packed head's score rows), furthest
    from the dense model; ("", overall) with one output of one part."""
    found = {name: float(figures["cosine"]) for name, figures in (fidelity.get("outputs") or {}).items()}
    for name, parts in (fidelity.get("parts") or {}).items():
        found.update({f"{name} rows {part['rows']}": float(part["cosine"]) for part in parts})
    if not found:
        return "", float(fidelity["cosine"])
    name = min(found, key=found.get)
    return name, found[name]


def failed(gates: list[Gate]) -> list[Gate]:
    return [g for g in gates if not g.passed]


def raise_if_failed(gates: list[Gate]) -> None:
    """GateError naming every missed gate on one line."""
    missed = failed(gates)
    if missed:
        raise GateError("gate failed: " + "; ".join(g.message() for g in missed))
