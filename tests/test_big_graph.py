"""Big graphs: a 10,000-node chain prunes validly under a memory cap, and the analysis and rewrite do
work proportional to the node count (counted in function calls, not timed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.apply.tidy import tidied
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.score.criteria import score
from onnxprune.select.plan import select_uniform
from onnxprune.apply.rewrite import apply_plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_chain import chain_model  # noqa: E402

CHILD = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # 3 GB of address space, imports included
    from onnxprune import prune
    from onnxprune.load.model import save_model_atomic
    result = prune(sys.argv[1], 0.3, bench_rounds=0)
    save_model_atomic(result.model, sys.argv[2])
""")


def test_10000_node_chain_prunes_validly_under_a_memory_cap(tmp_path):
    src, out = tmp_path / "chain.onnx", tmp_path / "pruned.onnx"
    onnx.save(chain_model(10000), str(src))  # 5,000 initializers: the many-constant session path
    proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned)
    dense = onnx.load(str(src))
    assert len(pruned.graph.node) == len(dense.graph.node)
    inner = {t.name: tuple(t.dims) for t in pruned.graph.initializer if t.name.startswith("w") and t.name.endswith("_0")}
    assert len(inner) == 2500 and all(dims[0] < 8 for dims in inner.values())  # every block's inner width shrank
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.ones((1, 8, 4, 4), np.float32)})[0]
    assert y.shape == (1, 4, 4, 4)  # (thousands of random residual blocks overflow float32, dense or pruned)


def _calls(fn) -> int:
    """Python and C function calls made by fn(): work, not time."""
    count = 0

    def profiler(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1
    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def _analyse_and_rewrite(model: onnx.ModelProto) -> None:
    dep = build_dependency(ModelGraph(model))
    apply_plan(select_uniform(dep, score(dep, "l2"), 0.3, round_to=1))


def test_analysis_and_rewrite_work_grows_linearly():
    small, large = chain_model(500), chain_model(2000)
    assert tidied(onnx.ModelProto.FromString(large.SerializeToString())) is not None  # no graphsurgeon round trip
    _analyse_and_rewrite(small)  # first use: imports and caches
    ratio = _calls(lambda: _analyse_and_rewrite(large)) / _calls(lambda: _analyse_and_rewrite(small))
    assert ratio < 4 * 1.1, ratio  # 4x the nodes: at most 4.4x the calls
