#!/usr/bin/env python3
"""CPU seconds of each stage of one `onnxprune prune MODEL -o OUT --ratio 0.3` run, in this process
(the stages are wrapped, so what runs is exactly the CLI; a nested stage is counted in its parent too).
CPU seconds are steadier than wall seconds on a shared machine. Stages a checkout lacks are skipped,
so an older tree can be compared with PYTHONPATH=OLD_TREE:

    python tools/bench_stage_cpu.py chain.onnx out.onnx
    PYTHONPATH=/tmp/old python tools/bench_stage_cpu.py chain.onnx out_old.onnx
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time

STAGES = [("onnxprune.api", "prepare"), ("onnxprune.api", "choose_plan"), ("onnxprune.api", "apply_and_recover"),
          ("onnxprune.api", "record_dense"), ("onnxprune.api", "evaluate"), ("onnxprune.lean_stage", "check_valid"),
          ("onnxprune.lean_stage", "model_costs"), ("onnxprune.lean_stage", "Parked"),
          ("onnxprune.lean_stage", "record_dense"), ("onnxprune.lean_stage", "run_checks"),
          ("onnxprune.lean_stage", "describe"), ("onnxprune.lean_stage", "DetachedPlan"),
          ("onnxprune.report.outputs", "deliver")]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    import onnxprune
    import onnxruntime as ort

    root = onnxprune.__file__.rsplit("/", 1)[0]
    cpu: dict[str, float] = {}

    def wrap(fn, label):
        def run(*a, **k):
            start = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                cpu[label] = cpu.get(label, 0.0) + time.process_time() - start
        return run

    for module, name in STAGES + [("onnxprune.lean_stage", "evaluate_lean")]:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin.startswith(root):
            continue
        mod = importlib.import_module(module)
        if hasattr(mod, name):
            setattr(mod, name, wrap(getattr(mod, name), f"{module.split('.')[-1]}.{name}"))
    ort.InferenceSession.__init__ = wrap(ort.InferenceSession.__init__, "onnxruntime sessions")
    from onnxprune.cli.main import main as cli

    start = time.process_time()
    code = cli(["prune", args[0], "-o", args[1], "--ratio", "0.3", "--force", "-q", *args[2:]])
    print(f"total {time.process_time() - start:.1f} CPU s (exit {code})")
    for label, seconds in cpu.items():
        print(f"  {label}: {seconds:.2f}")
    return code


if __name__ == "__main__":
    sys.exit(main())
