"""The channel block ONNX Runtime's CPU convolutions compute in (MLAS's NCHWc layout).

ONNX Runtime runs a float Conv on the CPU in blocks of 16 channels with AVX-512 and 8 with AVX2, and
pads a width that is not a multiple of the block up to the next one: on an AVX-512 machine a layer
pruned from 32 to 24 channels runs as 32 (checked in its optimized graph: the 24-wide Conv stays an
NCHWc Conv, its weights padded). MACs counted for the 8 channels removed buy no time, so a latency
target rounds widths to the block (docs/benchmarks.md, s11-lat).
"""

from __future__ import annotations

import functools
import platform

BLOCKS = (("avx512f", 16), ("avx2", 8), ("avx", 8))  # CPU flag -> MLAS NCHWc block (floats)


@functools.lru_cache(maxsize=1)
def nchwc_block() -> int | None:
    """The NCHWc block of this CPU, or None when it is unknown (not x86-64 Linux: nothing to round to)."""
    return block_for(cpu_flags())


def block_for(flags: set[str]) -> int | None:
    return next((block for flag, block in BLOCKS if flag in flags), None)


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo; empty where there is none."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
