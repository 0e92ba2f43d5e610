"""The candidates a search explores: MACs targets, allocation scope, depth and int8, sampled by seed.

A candidate is a plain dict (it crosses process boundaries and is written to JSON): its id, the
`prune()` keywords that make it, and whether the pruned model is then quantized.

The dimensions are named (DIMENSIONS); a search may leave any out but the MACs targets. Depth comes
as levels worked out from the model (depth_levels.py: none for a model without removable units, and
then the candidates are exactly those of a search without depth).
"""

from __future__ import annotations

import random
from typing import Sequence

from onnxprune.errors import BadInputError
from onnxprune.search.depth_levels import DepthLevel

TARGETS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)  # fractions of the dense MACs kept
SCOPES = ("global", "local")
INT8 = (False, True)
DIMENSIONS = ("targets", "scopes", "depth", "int8")


def parse_space(space: str | Sequence[str] | None) -> tuple[str, ...]:
    """The dimensions to explore, in DIMENSIONS order: all by default, else a comma list or sequence
    of their names, which must include the MACs targets."""
    if space is None:
        return DIMENSIONS
    names = [n.strip() for n in (space.split(",") if isinstance(space, str) else space) if n.strip()]
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise BadInputError(f"--space: unknown dimension {unknown[0]!r} (choose from {','.join(DIMENSIONS)})")
    if "targets" not in names:
        raise BadInputError("--space: the MACs targets are every search's first dimension; include 'targets'")
    return tuple(d for d in DIMENSIONS if d in names)


def candidates(budget: int, seed: int = 0, int8: bool = True, depths: Sequence[DepthLevel] = (),
               scopes: bool = True) -> list[dict]:
    """`budget` candidates of the grid TARGETS x SCOPES (x INT8) (x depth levels), in a seeded order
    that covers the targets first: every target once (global scope, float, no depth) before any
    second setting of one, so a small budget still spans the latency range. After those, candidates
    with depth and without alternate, a depth one first, so a small budget tries depth too; the
    depth ones cover every (target, level) pair (global, float) before other scopes or int8.
    Without depth levels the order is the one a search without depth had. Same arguments, same
    candidates."""
    rng = random.Random(seed)
    scope_values = SCOPES if scopes else SCOPES[:1]
    quantized = INT8 if int8 else (False,)
    first = [_spec(t, "global", False) for t in TARGETS]
    rest = [_spec(t, s, q) for t in TARGETS for s in scope_values for q in quantized if (s, q) != ("global", False)]
    rng.shuffle(first)
    rng.shuffle(rest)
    pairs = [(t, level.units) for level in depths for t in TARGETS if level.allows(t)]
    deep_first = [_spec(t, "global", False, k) for t, k in pairs]
    deep_rest = [_spec(t, s, q, k) for t, k in pairs for s in scope_values for q in quantized
                 if (s, q) != ("global", False)]
    rng.shuffle(deep_first)  # drawn after the others: without depth, the same order as before
    rng.shuffle(deep_rest)
    chosen = (first + _alternate(deep_first + deep_rest, rest))[:budget]
    for index, spec in enumerate(chosen):
        spec["id"] = f"c{index:03d}"
    return chosen


def _alternate(a: list, b: list) -> list:
    """a[0], b[0], a[1], b[1], ..., then what is left of the longer."""
    merged = [x for pair in zip(a, b) for x in pair]
    shorter = min(len(a), len(b))
    return merged + a[shorter:] + b[shorter:]


def _spec(target: float, scope: str, int8: bool, depth: int = 0) -> dict:
    prune = {"target_macs": target, "scope": scope, **({"depth": depth} if depth else {})}
    return {"prune": prune, "int8": int8,
            "label": f"macs {target:g}, {scope}" + (f", depth {depth}" if depth else "") + (", int8" if int8 else "")}
