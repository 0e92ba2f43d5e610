"""One model's result, kept while several plans are chosen from it (a MACs search scores once).

Weak references, not ids: an id can be reused by the next model once this one is freed, and its
result must not be."""

from __future__ import annotations

import weakref
from typing import Any, Callable, Hashable


class LastModel:
    """The last (analysis, data, key) -> value computed; `get` recomputes when any of them changed."""

    def __init__(self) -> None:
        self._refs: tuple | None = None
        self._key: Hashable = None
        self._value: Any = None

    def get(self, dep: object, data: object, key: Hashable, compute: Callable[[], Any]) -> Any:
        refs = self._refs
        if refs is None or refs[0]() is not dep or refs[1]() is not data or self._key != key:
            self._value = compute()
            self._refs, self._key = (weakref.ref(dep), weakref.ref(data)), key
        return self._value
