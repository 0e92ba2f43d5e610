"""Human-readable views of a dependency: groups, channels and what froze them."""

from __future__ import annotations

from collections import defaultdict

from onnxprune.couple.dependency import Dependency


def barrier_table(dep: Dependency) -> list[dict]:
    """One row per distinct (op, node, reason): how many groups and channels it froze."""
    rows: dict[tuple[str, str, str], dict] = {}
    for grp in dep.groups:
        if not grp.frozen.any():
            continue
        seen = set()
        for f in grp.freezes:
            key = (f.op, f.node, f.reason)
            if key in seen:
                continue
            seen.add(key)
            row = rows.setdefault(key, {"op": f.op, "node": f.node, "reason": f.reason, "groups": 0,
                                        "channels": 0, "slots": []})
            row["groups"] += 1
            row["channels"] += int(grp.frozen.sum())
            if len(row["slots"]) < 3:
                row["slots"].append(str(f.slot))
    return sorted(rows.values(), key=lambda r: -r["channels"])


def inspect_dict(dep: Dependency) -> dict:
    groups = []
    for grp in dep.groups:
        reasons = sorted({str(f) for f in grp.freezes})
        groups.append({"group": grp.id, "channels": grp.size, "prunable": grp.prunable,
                       "slots": [str(s) for s in grp.slots], "frozen_by": reasons[:5]})
    prunable = sum(g.prunable for g in dep.groups)
    return {"groups": groups, "channels": dep.num_channels, "prunable_channels": prunable,
            "barriers": barrier_table(dep), "notes": list(dep.notes)}


def _params_of(dep: Dependency, slots) -> list[str]:
    return [f"{s.tensor}" for s in slots if s.tensor in dep.graph.constants]


def format_inspect(dep: Dependency, limit: int = 200) -> str:
    info = inspect_dict(dep)
    lines = [f"{len(dep.groups)} groups, {info['channels']} channels, {info['prunable_channels']} prunable",
             "", f"{'group':>5} {'channels':>8} {'prunable':>8}  layers (parameters in the group)"]
    for grp in dep.groups[:limit]:
        params = _params_of(dep, grp.slots)
        shown = ", ".join(params[:4]) + (f", +{len(params) - 4} more" if len(params) > 4 else "")
        lines.append(f"{grp.id:>5} {grp.size:>8} {grp.prunable:>8}  {shown or '(no parameters)'}")
    if len(dep.groups) > limit:
        lines.append(f"  ... {len(dep.groups) - limit} more groups")
    for note in dep.notes:
        lines.append(f"note: {note}")
    barriers = info["barriers"]
    lines += ["", "Barriers (what froze which channels, and why):" if barriers else "No barriers."]
    by_reason = defaultdict(list)
    for row in barriers:
        by_reason[(row["op"], row["reason"])].append(row)
    for row in barriers[:limit]:
        where = f"{row['op']} '{row['node']}'" if row["node"] else row["op"]
        lines.append(f"  {where}: {row['reason']} -> froze {row['channels']} channels in {row['groups']} group(s), "
                     f"e.g. {row['slots'][0]}")
    return "\n".join(lines)


def why_nothing_removed(dep: Dependency, round_to: int) -> str:
    """Why a plan removed no channel, for a warning: every channel frozen (and by what), or prunable
    groups too narrow for the target once each weight's width keeps a multiple of `round_to`."""
    prunable = sum(g.prunable for g in dep.groups)
    if not dep.groups:
        note = next(iter(dep.notes), "")
        return "the analysis found no layers with channels to remove" + (f" ({note})" if note else "")
    if not prunable:
        top = "; ".join(f"{r['op']} '{r['node']}': {r['reason']} ({r['channels']} channels)"
                        for r in barrier_table(dep)[:2])
        return f"every channel of the {len(dep.groups)} groups is frozen ({top}); `onnxprune inspect` lists the barriers"
    widest = max(g.prunable for g in dep.groups)
    return (f"{prunable} channels are prunable (at most {widest} in a group), but the target leaves every group whole "
            f"with weight widths kept a multiple of {round_to}; try --round-to 1 or a deeper target")
