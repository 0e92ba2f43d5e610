"""The candidates a search explores: MACs targets, allocation scope and int8, sampled by seed.

A candidate is a plain dict (it crosses process boundaries and is written to JSON): its id, the
`prune()` keywords that make it, and whether the pruned model is then quantized.
"""

from __future__ import annotations

import random

TARGETS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)  # fractions of the dense MACs kept
SCOPES = ("global", "local")
INT8 = (False, True)


def candidates(budget: int, seed: int = 0, int8: bool = True) -> list[dict]:
    """`budget` candidates of the grid TARGETS x SCOPES (x INT8), in a seeded order that covers the
    targets first: every target once (global scope, float) before any second setting of one, so a
    small budget still spans the latency range. Same budget and seed, same candidates."""
    rng = random.Random(seed)
    first = [_spec(t, "global", False) for t in TARGETS]
    rest = [_spec(t, s, q) for t in TARGETS for s in SCOPES for q in (INT8 if int8 else (False,))
            if (s, q) != ("global", False)]
    rng.shuffle(first)
    rng.shuffle(rest)
    chosen = (first + rest)[:budget]
    for index, spec in enumerate(chosen):
        spec["id"] = f"c{index:03d}"
    return chosen


def _spec(target: float, scope: str, int8: bool) -> dict:
    return {"prune": {"target_macs": target, "scope": scope}, "int8": int8,
            "label": f"macs {target:g}, {scope}" + (", int8" if int8 else "")}
