"""Bounded-memory passes: split the tensors a statistics pass must expose into chunks that fit a budget.

Exposing every needed intermediate tensor in one ONNX Runtime run keeps them all alive at once (a
640x640 detector needs tens of GB at batch 32). Instead the tensors are packed, in graph order, into
chunks whose exposed bytes times the batch size stay under `budget`; each chunk is one streaming pass
over the samples, running only the segment of the model after the previous chunk (score/stream.py).
Peak memory is then about the model, one batch of one segment's activations, one chunk and the stored
frontier between segments; time is one forward run of the model per sample in all.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

DEFAULT_BUDGET = 128 * 2 ** 20   # bytes of exposed activations (float32 copies included) per run
UNKNOWN_BYTES = 4 * 2 ** 20      # a tensor whose shape is unknown is assumed this big per sample
STATS_COPIES = 2                 # statistics read a float32 copy (1x) of the float32 output (1x)
BATCH_BYTES = 16 * 2 ** 20       # the largest exposed tensor of one batch: ONNX Runtime holds a few tensors
                                 # that size alive inside a segment (PP-OCRv4 det at 640x640: 12.5 MB a sample)


def tensor_bytes(shapes: Mapping[str, Sequence[int] | None], tensors: Sequence[str], itemsize: int = 4) -> dict[str, int]:
    """Bytes per sample of each tensor (shapes as given for one sample)."""
    out = {}
    for t in tensors:
        shape = shapes.get(t)
        out[t] = int(np.prod(shape)) * itemsize if shape else UNKNOWN_BYTES
    return out


def plan_passes(tensors: Sequence[str], bytes_per_sample: Mapping[str, int], batch_size: int,
                budget: int = DEFAULT_BUDGET) -> tuple[int, list[list[str]]]:
    """(batch size, chunks of `tensors`) so that one chunk of one batch stays under `budget`."""
    if not tensors:
        return batch_size, []
    biggest = max(bytes_per_sample.get(t, UNKNOWN_BYTES) for t in tensors) * STATS_COPIES
    batch = int(max(1, min(batch_size, budget // max(biggest, 1), BATCH_BYTES * STATS_COPIES // max(biggest, 1))))
    chunks: list[list[str]] = [[]]
    used = 0
    for t in tensors:
        cost = bytes_per_sample.get(t, UNKNOWN_BYTES) * batch  # exposed float32 outputs of one run
        if chunks[-1] and used + cost > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(t)
        used += cost
    return batch, chunks
