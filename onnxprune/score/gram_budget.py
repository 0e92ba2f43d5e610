"""A ceiling on the Gram matrices one statistics pass holds at once.

Every Gram is float64 channels x channels and lives until the pass ends. A CRNN whose LSTM is
unrolled into 40 cells reads a 4096-wide feature at each: 40 Grams of 134 MB, 5.4 GB, more than the
whole run may use. Grams are granted smallest first (more layers get one per byte) until the budget
is spent; a tensor refused one is scored from its diagonal (|w|^2 E[x^2], as for inputs wider than
GRAM_LIMIT), which the criteria already handle.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping

GRAM_BUDGET = 1 << 30  # bytes of float64 Grams held by one statistics pass

log = logging.getLogger("onnxprune")


def within_budget(wanted: Mapping[tuple[str, int], bool], shapes: Mapping[str, tuple | None],
                  budget: int = GRAM_BUDGET) -> dict[tuple[str, int], bool]:
    """`wanted` with Gram requests dropped, largest last, once their float64 bytes would pass `budget`."""
    out = dict(wanted)
    sized = []
    for key, gram in wanted.items():
        shape = shapes.get(key[0])
        if gram and shape and -len(shape) <= key[1] < len(shape) and isinstance(shape[key[1]], int):
            sized.append((8 * shape[key[1]] ** 2, key))
    spent, refused = 0, []
    for size, key in sorted(sized):
        if spent + size <= budget:
            spent += size
        else:
            out[key] = False
            refused.append(key)
    if refused:
        log.info("%d Gram matrices (largest %s) left out to stay within %.0f MB; scored from their diagonals",
                 len(refused), f"{int(math.sqrt(max(s for s, k in sized if k in refused) / 8))}^2",
                 budget / 2 ** 20)
    return out
