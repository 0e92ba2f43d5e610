"""The model's constants as a read-only mapping that decodes on access, so the weights are held once.

Decoding every initializer up front doubled the memory of a model: the proto keeps its bytes and
numpy kept a copy. Here a value is decoded from its TensorProto when asked for; small values (shape
vectors, biases) are kept, a large one is kept only until another large one is read, so a rule
reading the same weight twice decodes it once and the peak is the proto plus one weight. Shapes,
element types and sizes come from the proto without decoding.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterator, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

KEEP_ELEMENTS = 1 << 16  # values up to this size stay decoded: shape vectors, biases, norm scales


class Constants(Mapping[str, np.ndarray]):
    """name -> value; each source is a TensorProto (decoded on access) or an array (held as is)."""

    def __init__(self) -> None:
        self._sources: dict[str, onnx.TensorProto | np.ndarray] = {}
        self._kept: dict[str, np.ndarray] = {}
        self._last: tuple[str, np.ndarray] | None = None

    def add(self, name: str, source: onnx.TensorProto | np.ndarray) -> None:
        self._sources[name] = source
        self._kept.pop(name, None)

    def __getitem__(self, name: str) -> np.ndarray:
        kept = self._kept.get(name)
        if kept is not None:
            return kept
        if self._last is not None and self._last[0] == name:
            return self._last[1]
        source = self._sources[name]  # KeyError for a name that is not a constant, as a dict would
        if isinstance(source, np.ndarray):
            return source
        value = read_tensor(source)
        if value.size <= KEEP_ELEMENTS:
            self._kept[name] = value
        else:
            self._last = (name, value)
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def get(self, name: str, default=None):
        """Mapping.get without a KeyError per miss (rules ask about every tensor they meet)."""
        return self[name] if name in self._sources else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def shape(self, name: str) -> tuple[int, ...]:
        source = self._sources[name]
        return tuple(source.shape) if isinstance(source, np.ndarray) else tuple(source.dims)  # ints already

    def dtype(self, name: str) -> np.dtype:
        source = self._sources[name]
        if isinstance(source, np.ndarray):
            return source.dtype
        return _np_dtype(source.data_type)

    def size(self, name: str) -> int:
        return int(np.prod(self.shape(name), dtype=np.int64))

    def release(self) -> None:
        """Forget the decoded large value (between stages)."""
        self._last = None


@lru_cache(maxsize=None)
def _np_dtype(data_type: int) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))


def read_tensor(tensor: onnx.TensorProto) -> np.ndarray:
    """numpy_helper.to_array, or a read-only memory map for a tensor read from its file (external.py)."""
    from onnxprune.load.external import is_bound, read
    return read(tensor) if is_bound(tensor) else numpy_helper.to_array(tensor)


def sizes(constants: Mapping[str, np.ndarray]) -> Iterator[tuple[str, tuple[int, ...], np.dtype]]:
    """(name, shape, dtype) of every constant, without decoding any (works on a plain dict too)."""
    if isinstance(constants, Constants):
        for name in constants:
            yield name, constants.shape(name), constants.dtype(name)
    else:
        for name, value in constants.items():
            yield name, tuple(value.shape), value.dtype
