"""Exit codes a pipeline can trust, and exactly one line on stderr for every failure.

0 success; 1 the result failed validation or a gate; 2 bad input or usage; 3 an unexpected internal
error (a bug: the line says so and names a log file with the traceback; -v prints it instead);
130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP) interrupted, with every temporary file removed.
Model-controlled text (node names with newlines, escape codes) is escaped so a message stays one line.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import traceback
import warnings
from typing import Callable

from onnxprune.errors import OnnxPruneError, one_line
from onnxprune.progress import held_messages, silence_runtime  # noqa: F401  (re-exported for the commands)

INTERNAL = 3


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so every cleanup path runs as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def say(message: str) -> None:
    print(f"onnxprune: {one_line(message)}", file=sys.stderr, flush=True)


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


def _install_handlers() -> dict:
    previous = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, _raise_interrupted)
        except ValueError:  # not the main thread: the default handlers stay
            pass
    return previous


def _internal_error(exc: BaseException, verbose: int) -> int:
    detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
    if isinstance(exc, MemoryError):
        say("error: ran out of memory; use smaller inputs (--calib-limit, --input-shape, --batch)")
        return INTERNAL
    if verbose:
        traceback.print_exc(file=sys.stderr)
        say(f"internal error (a bug in onnxprune, not your input): {detail}")
        return INTERNAL
    try:
        with tempfile.NamedTemporaryFile("w", prefix="onnxprune-crash-", suffix=".log", delete=False) as log:
            traceback.print_exc(file=log)
        where = f"traceback in {log.name}"
    except OSError:
        where = "run again with -v for the traceback"
    say(f"internal error (a bug in onnxprune, not your input): {detail}; {where}")
    return INTERNAL


def run(command: Callable[[], int], verbose: int = 0) -> int:
    """Run `command` and map every outcome to an exit code and at most one line on stderr."""
    from onnxprune.load.destinations import cleanup_temporaries
    from onnxprune.couple.vocabulary import Barrier

    silence_runtime(verbose)
    previous = _install_handlers()
    try:
        with warnings.catch_warnings():
            if not verbose:  # library warnings (numpy, PIL, onnx) are multi-line noise around our one line
                warnings.simplefilter("ignore")
            with held_messages() as release:  # our own warnings print once the command has succeeded
                code = command()
                if code == 0:
                    release()
            return code
    except OnnxPruneError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    except Barrier as exc:  # a rule met something it cannot handle: name it, no traceback
        say(f"error: unsupported model structure: {exc}; pass --input-shape or see `onnxprune inspect`")
        return 2
    except Interrupted as exc:
        say("interrupted")
        return 128 + exc.signum
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except BrokenPipeError:  # the reader of our stdout went away (| head): its choice, no message
        try:
            import os
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        return 128 + 13  # as if killed by SIGPIPE, for `set -o pipefail`
    except RecursionError:
        say("error: the model's graph is nested or chained too deeply to analyse")
        return 2
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into exit 3
        return _internal_error(exc, verbose)
    finally:
        for sig in previous:  # a second signal must not interrupt the cleanup itself
            signal.signal(sig, signal.SIG_IGN)
        cleanup_temporaries()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
