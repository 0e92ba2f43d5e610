"""Which criterion, scope and recovery to use when the user does not say (backed by docs/benchmarks.md).

With calibration data the data-aware combination; without, the data-free one. Every value stays an
override: a flag the user gives is never replaced.
"""

from __future__ import annotations

# measured on real models (docs/benchmarks.md, section 6): global + sequential beat damage + sequential on
# ppocr_rec and ddddocr, tied on magika; damage wins on ppocr_cls (--scope damage stays an option)
DATA_AWARE = {"criterion": "reconstruction", "scope": "global", "recover": "sequential"}
DATA_FREE = {"criterion": "l2", "scope": "local", "recover": "none"}


def resolve(criterion: str | None, scope: str | None, recover: str | None, has_data: bool) -> tuple[str, str, str]:
    """The (criterion, scope, recover) to run: the given ones, the rest from the matching defaults."""
    base = DATA_AWARE if has_data else DATA_FREE
    return (criterion or base["criterion"], scope or base["scope"], recover or base["recover"])
