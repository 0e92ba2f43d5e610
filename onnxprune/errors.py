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
