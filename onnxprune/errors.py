"""Errors with the exit code the command line maps them to.

Bad input or usage exits 2; a pruned model that fails validation, or a missed quality gate, exits 1.
Every message is one line that names the file, node or op and what the user can do.
"""


class OnnxPruneError(Exception):
    """Base class: a one-line message meant for the user."""

    exit_code = 2


class BadInputError(OnnxPruneError):
    """The input model, data or options cannot be used (exit 2)."""

    exit_code = 2


class ValidationError(OnnxPruneError):
    """The pruned model is invalid or misses a requested gate (exit 1)."""

    exit_code = 1


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an error (or text), at most `limit` characters: what a message
    quoting ONNX, ONNX Runtime or protobuf needs, since their errors span many lines."""
    text = str(error).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return first if len(first) <= limit else first[:limit - 3] + "..."


def one_line(text: object) -> str:
    """`text` with line breaks and other control characters escaped (\\n, \\x1b, ...)."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in str(text))
