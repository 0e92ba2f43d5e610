"""Atomic file writes through the output guard (destinations.py): a temporary file in the
destination's folder, then a rename, so a reader never sees a half-written file."""

from __future__ import annotations

import json
import os

from onnxprune.load.destinations import write_bytes


def write_json_atomic(data: dict, path: str | os.PathLike) -> None:
    write_text_atomic(json.dumps(data, indent=2, sort_keys=False) + "\n", path)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write via a temporary file in the same folder and a rename: never a half-written file."""
    write_bytes_atomic(text.encode("utf-8"), path)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    """Write through the output guard: resolved path, temporary file and rename (destinations.py)."""
    write_bytes(path, data)
