"""The structure of a saved plan (--plan PLAN.json), checked before it is applied: a hand-edited or
foreign file is refused with one line naming the entry, never a traceback or a silent wrap-around
(a kept index of -1 would otherwise keep the last channel)."""

from __future__ import annotations

from onnxprune.errors import BadInputError


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_plan_document(data) -> None:
    """BadInputError unless `data` is {"schema", "groups": [{"anchor": {tensor, axis, size}, "kept": [...]}]}."""
    if not isinstance(data, dict):
        raise BadInputError(f"plan: expected a JSON object with 'schema' and 'groups', got a {type(data).__name__}")
    groups = data.get("groups")
    if not isinstance(groups, list):
        raise BadInputError("plan: 'groups' must be a list")
    if "options" in data and not isinstance(data["options"], dict):
        raise BadInputError("plan: 'options' must be an object")
    for i, entry in enumerate(groups):
        anchor = entry.get("anchor") if isinstance(entry, dict) else None
        if not isinstance(anchor, dict) or not isinstance(anchor.get("tensor"), str) \
                or not _int(anchor.get("axis")) or not _int(anchor.get("size")) or anchor["size"] < 1:
            raise BadInputError(f"plan: groups[{i}] needs an 'anchor' with a tensor name, an integer axis and a "
                                "positive size")
        kept = entry.get("kept")
        if not isinstance(kept, list) or not all(_int(k) for k in kept):
            raise BadInputError(f"plan: groups[{i}].kept must be a list of channel indices")
        bad = [k for k in kept if not 0 <= k < anchor["size"]]
        if bad:
            raise BadInputError(f"plan: groups[{i}].kept has index {bad[0]}, outside 0..{anchor['size'] - 1}")
        if len(set(kept)) != len(kept):
            raise BadInputError(f"plan: groups[{i}].kept lists a channel twice")
        if not kept:
            raise BadInputError(f"plan: groups[{i}].kept is empty; a group keeps at least one channel")
