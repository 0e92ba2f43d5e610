"""Energy per inference from Intel RAPL counters, where the machine exposes them readably.

RAPL (/sys/class/powercap/intel-rapl:N/energy_uj) counts the energy of a whole CPU package,
including every other process on it, so the figure is measured package energy over a timed loop of
one model divided by the runs: meaningful on a quiet machine, an upper bound on a busy one. Where
no counter is readable (virtual machines, containers, non-Intel, non-Linux, or root-only counters
since the PLATYPUS mitigation) energy is reported as not measurable, with the reason. This module
never estimates; `onnxprune compare` adds its own estimate where no counter is readable and labels
it as one (schedules/measure.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

POWERCAP = Path("/sys/class/powercap")


def _package_zones(root: Path) -> list[Path]:
    """Top-level package zones (intel-rapl:0, intel-rapl:1, ...), not their sub-zones."""
    return sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)


def rapl_zones(root: Path | None = None) -> tuple[list[Path], str | None]:
    """Readable package zones, or ([], why not)."""
    root = POWERCAP if root is None else root
    zones = _package_zones(root)
    if not zones:
        return [], f"no RAPL counters ({root}/intel-rapl:*/energy_uj does not exist)"
    readable = []
    for zone in zones:
        try:
            int((zone / "energy_uj").read_text())
            readable.append(zone)
        except (OSError, ValueError):
            continue
    if not readable:
        return [], f"RAPL counters under {root} are not readable by this user"
    return readable, None


def _read(zones: list[Path]) -> list[int]:
    return [int((z / "energy_uj").read_text()) for z in zones]


def _range(zone: Path) -> int:
    try:
        return int((zone / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        return 2**32


def measure_energy(run: Callable[[], object], min_seconds: float = 0.5, min_runs: int = 5,
                   root: Path | None = None) -> dict:
    """Call `run` for at least `min_seconds` and `min_runs` times between two counter readings.

    Returns {"mj_per_inference", "runs", "seconds", "method"} or {"measurable": False, "reason"}.
    """
    zones, why = rapl_zones(root)
    if not zones:
        return {"measurable": False, "reason": why}
    start_e, start = _read(zones), time.perf_counter()
    runs = 0
    while runs < min_runs or time.perf_counter() - start < min_seconds:
        run()
        runs += 1
    seconds = time.perf_counter() - start
    end_e = _read(zones)
    total_uj = 0
    for zone, a, b in zip(zones, start_e, end_e):
        total_uj += b - a if b >= a else b + _range(zone) - a  # the counter wrapped
    return {"measurable": True, "mj_per_inference": round(total_uj / 1000.0 / runs, 6), "runs": runs,
            "seconds": round(seconds, 4),
            "method": f"RAPL package energy ({', '.join(z.name for z in zones)}), all processes, divided by runs"}
