"""Progress bars and logging for long loops (calibration, search, benchmarks, fine-tuning).

Bars are tqdm on stderr and appear only when stderr is a terminal and the user did not ask for
quiet; logging goes through the standard library under the `onnxprune` logger, so a program that
embeds onnxprune configures it like any other library. The command line calls `configure()` once
from its `-q/--quiet` and `-v/--verbose` flags.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
LOGGER = "onnxprune"
_state = {"quiet": False}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of the record (pytest and embedders swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(quiet: bool = False, verbose: int = 0) -> None:
    """Command-line set-up: quiet silences bars and everything below errors; -v is info, -vv debug."""
    _state["quiet"] = bool(quiet)
    logger = logging.getLogger(LOGGER)
    if quiet:
        level = logging.ERROR
    else:
        level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("onnxprune: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


@contextmanager
def held_messages() -> Iterator[Callable[[], None]]:
    """While the block runs, the command line's stderr messages (warnings) are held back; calling the
    yielded `release()` writes them, leaving without it drops them, so a failed command's stderr is its
    one error line (a fallback warning met on the way is no part of it). With -v or -vv the messages
    stay live: a verbose run is read as it goes."""
    logger = logging.getLogger(LOGGER)
    live = [h for h in logger.handlers if isinstance(h, _StderrHandler)]
    if not live or logger.level < logging.WARNING:
        yield lambda: None
        return
    # the standard library's buffer: never flushed by size or level, only by release()
    held = logging.handlers.MemoryHandler(capacity=sys.maxsize, flushLevel=logging.CRITICAL + 1, target=live[0],
                                          flushOnClose=False)
    held.setLevel(live[0].level)
    for handler in live:
        logger.removeHandler(handler)
    logger.addHandler(held)

    try:
        yield held.flush
    finally:
        logger.removeHandler(held)
        held.close()  # what was not released is dropped, never flushed at exit
        for handler in live:
            logger.addHandler(handler)


def enabled() -> bool:
    """Whether progress bars are shown: not quiet, and stderr is an interactive terminal."""
    if _state["quiet"]:
        return False
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def bar(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it",
        show: bool | None = None) -> Iterable[T] | Iterator[T]:
    """`iterable` wrapped in a tqdm bar when bars are enabled (or `show` forces it), else unchanged."""
    if not (enabled() if show is None else show):
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)


def step_bar(desc: str, total: int, unit: str = "step"):
    """A tqdm bar updated by hand (`bar.update(n)`, `bar.close()`) when bars are enabled, else None."""
    if not enabled():
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)


_RUNTIME_LOG_LEVEL = 4  # ONNX Runtime severities: 0 verbose .. 3 error, 4 fatal


def runtime_log_level() -> int:
    """The severity sessions should log at: only fatal messages unless -v was given."""
    return _RUNTIME_LOG_LEVEL


def silence_runtime(verbose: int) -> None:
    """ONNX Runtime logs errors in colour on stderr (even ones it recovers from) before our own
    one-line error; keep them for -v."""
    global _RUNTIME_LOG_LEVEL
    _RUNTIME_LOG_LEVEL = 2 if verbose else 4
    try:
        import onnxruntime as ort
        ort.set_default_logger_severity(_RUNTIME_LOG_LEVEL)
    except Exception:  # no runtime, or an old one: its messages are cosmetic
        pass
