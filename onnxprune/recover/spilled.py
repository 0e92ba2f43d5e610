"""Re-solved weights kept on disk, not in memory, until the rewrite writes them out.

Sequential recovery re-solves nearly every linear layer of a transformer whose residual width is
untouched: the solved weights add up to the pruned model's weights (2.6 GB for a 1.0B-parameter
model), and holding them in memory until `apply_plan` came on top of everything else. Here each
array of `MIN_BYTES` or more is written once to a private work file; every read returns a fresh
read-only memory map, so its pages count toward the RSS only while the reader holds it (a segment
being built, the rewrite writing that one tensor) and leave with the map.
"""

from __future__ import annotations

import os
from typing import Iterator, MutableMapping

import numpy as np

from onnxprune.load.workdirs import PrivateDir

MIN_BYTES = 1 << 20  # smaller arrays (biases, norm scales) stay in memory


class SpilledArrays(MutableMapping[str, np.ndarray]):
    """name -> array; large arrays live in files of a private folder removed with this object."""

    def __init__(self, min_bytes: int = MIN_BYTES) -> None:
        self.min_bytes = min_bytes
        self._held: dict[str, np.ndarray] = {}
        self._paths: dict[str, str] = {}
        self._folder: PrivateDir | None = None
        self._written = 0  # file names never repeat, whatever was replaced

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        if name in self:
            del self[name]
        value = np.asarray(value)
        if value.nbytes < self.min_bytes or value.dtype.hasobject:
            self._held[name] = value
            return
        if self._folder is None:
            self._folder = PrivateDir("solved")
        path = os.path.join(self._folder.name, f"{self._written}.npy")
        self._written += 1
        np.save(path, np.ascontiguousarray(value), allow_pickle=False)
        self._paths[name] = path

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._held:
            return self._held[name]
        return np.load(self._paths[name], mmap_mode="r", allow_pickle=False)  # KeyError for an unknown name

    def __delitem__(self, name: str) -> None:
        if name in self._held:
            del self._held[name]
            return
        os.remove(self._paths.pop(name))

    def __contains__(self, name: object) -> bool:
        return name in self._held or name in self._paths

    def __iter__(self) -> Iterator[str]:
        yield from list(self._held)
        yield from list(self._paths)

    def __len__(self) -> int:
        return len(self._held) + len(self._paths)

    def spilled(self) -> int:
        """How many arrays are in files."""
        return len(self._paths)

    def close(self) -> None:
        self._held.clear()
        self._paths.clear()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
