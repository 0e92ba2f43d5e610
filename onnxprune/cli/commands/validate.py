"""`onnxprune validate DENSE PRUNED`: is the pruned model valid, and how close is it to the dense one?

Exit 0 when every check passes (and every gate given), 1 when the pruned model fails a check or
misses a gate (the message names the figure), 2 for bad input or usage.
"""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    from onnxprune.cli.args import add_verbosity

    p = sub.add_parser("validate", help="check a pruned model against its dense original (validity, fidelity, gates)")
    p.add_argument("dense", help="the original .onnx model")
    p.add_argument("pruned", help="the pruned .onnx model to check")
    p.add_argument("--data", metavar="DATA.npz", help="inputs keyed by input name; a 'labels' array gives accuracy "
                                                      "(default: 8 synthetic samples)")
    p.add_argument("--min-cosine", type=float, metavar="C", help="gate: exit 1 if the outputs' cosine is below C")
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="gate: exit 1 if top-1 accuracy drops more than POINTS percentage points (needs labels)")
    p.add_argument("--input-shape", action="append", metavar="NAME:DxD..", help="shape for a dynamic input")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: default)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (schema onnxprune.validate/1)")
    add_verbosity(p)


def run(args) -> int:
    from onnxprune.score.calibration import load_calibration
    from onnxprune.cli.args import parse_shapes
    from onnxprune.load.data import synthetic_dataset
    from onnxprune.errors import BadInputError
    from onnxprune.check.gates import check_thresholds, evaluate_gates, raise_if_failed
    from onnxprune.graph.model_graph import resolve_input_shapes
    from onnxprune.load.model import load_model
    from onnxprune.report.formats import format_validation
    from onnxprune.load.runtime import session
    from onnxprune.report.schema import VALIDATE
    from onnxprune.check.validate import validate_pair

    flags = ("--min-cosine", "--max-drop")
    check_thresholds(args.min_cosine, args.max_drop, flags)
    if args.max_drop is not None and not args.data:
        raise BadInputError("--max-drop needs labelled data: pass --data DATA.npz with a 'labels' array")
    dense = load_model(args.dense, supported_only=False)
    from onnxprune.load.checker import check_model_any_size
    check_model_any_size(dense, f"{args.dense}: the dense model", path=args.dense)
    pruned = load_model(args.pruned, supported_only=False)
    shapes = resolve_input_shapes(dense, parse_shapes(args.input_shape))
    if args.data:
        data, kind = load_calibration(args.data, {k: len(v) for k, v in shapes.items()}), "given"
        from onnxprune.load.fit import check_fits
        check_fits(dense, data, args.data)  # bad data is the data's fault (exit 2), not the pruned model's
    else:
        data, kind = synthetic_dataset(session(dense, args.threads), shapes, samples=8), "synthetic"
    checked = validate_pair(dense, pruned, data, args.threads)
    fidelity = {"data": kind, **checked["fidelity"]}
    gates = evaluate_gates(fidelity, args.min_cosine, args.max_drop, flags)
    result = {"schema": VALIDATE, "dense": str(args.dense), "pruned": str(args.pruned),
              "validation": checked["validation"], "fidelity": fidelity, "gates": [g.as_dict() for g in gates]}
    if not args.quiet:
        print(json.dumps(result, indent=1) if args.json else format_validation(result))
    raise_if_failed(gates)
    return 0
