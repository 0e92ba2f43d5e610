"""The versioned JSON documents onnxprune writes, as JSON Schema, and a small validator for them.

docs/report-schema.md describes every field for people; this module is the machine-checked form.
Within a version, fields are only ever added (readers must ignore keys they do not know); renaming,
removing or changing the meaning of a field bumps the version in the `schema` string.

`validate(document, SCHEMA)` understands the subset of JSON Schema used here (type, const, enum,
required, properties, items, minimum) so no dependency is needed; the schemas are ordinary JSON
Schema, so `jsonschema` accepts them too where it is installed.
"""

from __future__ import annotations

REPORT = "onnxprune.report/1"
VALIDATE = "onnxprune.validate/1"
BENCH = "onnxprune.bench/1"

_NUM = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 0}
_COST = {
    "type": "object",
    "required": ["params", "macs", "size_bytes"],
    "properties": {"params": _COUNT, "macs": _COUNT, "size_bytes": _COUNT, "latency_ms": _NUM},
}
_FIDELITY = {
    "type": "object",
    "required": ["samples", "cosine", "rel_l2", "max_abs"],
    "properties": {
        "data": {"enum": ["given", "synthetic"]},
        "samples": _COUNT,
        "cosine": _NUM, "rel_l2": _NUM, "max_abs": _NUM, "top1_agreement": _NUM,
        "accuracy_dense": _NUM, "accuracy_pruned": _NUM,
        "outputs": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["cosine", "rel_l2", "max_abs"],
            "properties": {"cosine": _NUM, "rel_l2": _NUM, "max_abs": _NUM}}},
    },
}
_VALIDATION = {
    "type": "object",
    "required": ["checker", "onnxruntime", "interface"],
    "properties": {"checker": {"type": "string"}, "onnxruntime": {"type": "string"},
                   "interface": {"type": "string"}, "shape_inference": {"type": "string"},
                   "providers": {"type": "object"}},
}
_GATES = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "comparison", "threshold", "value", "passed"],
        "properties": {"name": {"type": "string"}, "comparison": {"enum": [">=", "<="]}, "threshold": _NUM,
                       "value": _NUM, "passed": {"type": "boolean"}, "flag": {"type": "string"}},
    },
}
_PLAN = {
    "type": "object",
    "required": ["channels", "removed", "groups", "pruned_groups", "per_group"],
    "properties": {
        "channels": _COUNT, "removed": _COUNT, "groups": _COUNT, "pruned_groups": _COUNT,
        "per_group": {"type": "array", "items": {
            "type": "object", "required": ["group", "channels", "kept", "frozen"],
            "properties": {"group": _COUNT, "channels": _COUNT, "kept": _COUNT, "frozen": {"type": "boolean"},
                           "slots": {"type": "array", "items": {"type": "string"}}}}},
    },
}

_DEPTH = {  # --depth: the residual units removed before width pruning
    "type": "object",
    "required": ["requested", "unit", "candidates", "data", "removed", "cosine", "params_kept", "macs_kept"],
    "properties": {
        "requested": _COUNT, "unit": {"enum": ["layer", "block"]}, "candidates": _COUNT,
        "data": {"enum": ["given", "synthetic"]}, "samples": _COUNT, "cosine": _NUM,
        "params_kept": _NUM, "macs_kept": _NUM, "width_target": {"type": ["object", "null"]},
        "removed": {"type": "array", "items": {
            "type": "object", "required": ["name", "adds", "influence", "nodes", "weights"],
            "properties": {"name": {"type": "string"}, "adds": {"type": "array", "items": {"type": "string"}},
                           "influence": _NUM, "cosine": _NUM, "nodes": _COUNT, "weights": _COUNT}}},
        "scores": {"type": "array", "items": {"type": "object", "required": ["name", "influence"],
                                              "properties": {"name": {"type": "string"}, "influence": _NUM,
                                                             "cosine": _NUM}}},
    },
}


def _document(title: str) -> dict:
    """The header every top-level schema shares."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, "type": "object"}


REPORT_SCHEMA = {
    **_document(REPORT),
    "required": ["schema", "input", "before", "after", "fidelity", "validation", "gates"],
    "properties": {
        "schema": {"const": REPORT},
        "input": {"type": "string"},
        "output": {"type": ["string", "null"]},
        "options": {"type": "object"},
        "plan": _PLAN,
        "before": _COST,
        "after": _COST,
        "latency_ratio": _NUM,
        "latency_timing": {"enum": ["paired", "separate"]},
        "finetune": {"type": "object", "required": ["epochs", "loss", "samples", "history"],
                     "properties": {"epochs": _COUNT, "loss": {"type": "string"}, "lr": _NUM, "samples": _COUNT,
                                    "best_epoch": {"type": ["integer", "null"]},
                                    "history": {"type": "array", "items": {"type": "object"}}}},
        "fidelity": _FIDELITY,
        "validation": _VALIDATION,
        "gates": _GATES,
        "passes": {"type": "array", "items": {
            "type": "object", "required": ["name", "changed", "seconds", "report"],
            "properties": {"name": {"type": "string"}, "options": {"type": "object"}, "changed": {"type": "boolean"},
                           "seconds": _NUM, "report": {"type": "object"}}}},
        "recipe": {"type": "string"},
        "depth": _DEPTH,
    },
}

VALIDATE_SCHEMA = {
    **_document(VALIDATE),
    "required": ["schema", "dense", "pruned", "validation", "fidelity", "gates"],
    "properties": {"schema": {"const": VALIDATE}, "dense": {"type": "string"}, "pruned": {"type": "string"},
                   "validation": _VALIDATION, "fidelity": _FIDELITY, "gates": _GATES},
}

BENCH_SCHEMA = {
    **_document(BENCH),
    "required": ["schema", "batch", "threads", "rounds", "warmup", "data", "models"],
    "properties": {
        "schema": {"const": BENCH}, "batch": _COUNT, "threads": _COUNT, "rounds": _COUNT, "warmup": _COUNT,
        "data": {"enum": ["given", "synthetic"]},
        "models": {"type": "array", "items": {
            "type": "object",
            "required": ["path", "params", "macs", "size_bytes", "inputs", "layers", "latency_ms", "latency_ratio",
                         "throughput_per_s", "memory", "energy"],
            "properties": {
                "path": {"type": "string"}, "params": _COUNT, "macs": _COUNT, "size_bytes": _COUNT,
                "inputs": {"type": "object"},
                "layers": {"type": "array", "items": {"type": "object", "required": ["node", "op", "macs"],
                                                      "properties": {"node": {"type": "string"},
                                                                     "op": {"type": "string"}, "macs": _COUNT}}},
                "latency_ms": {"type": "object", "required": ["p50", "p90"], "properties": {"p50": _NUM, "p90": _NUM}},
                "latency_ratio": _NUM, "throughput_per_s": {"type": ["number", "null"]},
                "memory": {"type": "object", "properties": {"peak_bytes": _COUNT, "method": {"type": "string"},
                                                            "error": {"type": "string"}}},
                "energy": {"type": "object", "required": ["measurable"],
                           "properties": {"measurable": {"type": "boolean"}, "mj_per_inference": _NUM,
                                          "reason": {"type": "string"}, "method": {"type": "string"}}},
            }}},
    },
}

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def validate(document, schema: dict, where: str = "$") -> list[str]:
    """Every way `document` breaks `schema`, as `path: problem` strings (empty when it conforms)."""
    errors: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(document, k) for k in kinds):
            return [f"{where}: expected {' or '.join(kinds)}, got {type(document).__name__}"]
    if "const" in schema and document != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {document!r}")
    if "enum" in schema and document not in schema["enum"]:
        errors.append(f"{where}: {document!r} is not one of {schema['enum']}")
    if "minimum" in schema and _is(document, "number") and document < schema["minimum"]:
        errors.append(f"{where}: {document} is below the minimum {schema['minimum']}")
    if isinstance(document, dict):
        errors += [f"{where}: missing '{key}'" for key in schema.get("required", []) if key not in document]
        for key, sub in schema.get("properties", {}).items():
            if key in document:
                errors += validate(document[key], sub, f"{where}.{key}")
    if isinstance(document, list) and "items" in schema:
        for i, item in enumerate(document):
            errors += validate(item, schema["items"], f"{where}[{i}]")
    return errors


def schema_for(document: dict) -> dict:
    """The schema a document declares in its `schema` field."""
    known = {REPORT: REPORT_SCHEMA, VALIDATE: VALIDATE_SCHEMA, BENCH: BENCH_SCHEMA}
    name = document.get("schema") if isinstance(document, dict) else None
    if name not in known:
        raise ValueError(f"unknown document schema {name!r}; known: {sorted(known)}")
    return known[name]


def check(document: dict) -> None:
    """Raise ValueError listing every problem if `document` breaks the schema it declares."""
    errors = validate(document, schema_for(document))
    if errors:
        raise ValueError(f"{document.get('schema')}: " + "; ".join(errors))
