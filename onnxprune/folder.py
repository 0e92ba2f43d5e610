"""Prune a model folder as a unit (ONNX Runtime GenAI or Hugging Face / Optimum export):

    folder = open_folder(path)             configs read, model found (load/model_folder.py)
    check_config(folder, dense geometry)   a config that disagrees with the graph: exit 2, both values named
    strip(model)                           the KV cache out of the interface (graph/kv_cache.py)
    prune(...)                             depth and width as for any model
    restore(...), new configs              the cache back with the pruned heads; every shape value the
                                           configs state, read from the pruned graph (graph/geometry.py)

Config-driven runtimes size every layer alike: when the pruned layers keep different head counts (or
intermediate sizes where config.json states one), the folder is refused with one line; `--ratio R
--scope local` (the same share of every group) or a plan with equal counts per layer gives a folder. A
MACs or parameter target with `--scope local` may still differ by a width step between layers: its
search refines one group at a time. The caller writes the files (cli/folder.py).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnxprune.api import prune
from onnxprune.errors import BadInputError
from onnxprune.graph.geometry import Geometry, geometry
from onnxprune.graph.kv_cache import restore, strip
from onnxprune.load.data import Dataset
from onnxprune.load.model import load_model
from onnxprune.load.model_folder import KEYS, ModelFolder, get, open_folder, put
from onnxprune.options import PruneOptions

log = logging.getLogger("onnxprune")
SEQUENCE = 16  # tokens per calibration sample when none are given
SAMPLES = 8
PER_LAYER = ("heads", "kv_heads", "head_size", "intermediate")


@dataclass
class FolderResult:
    """The pruned model (cache restored), the report, the new config texts and the files copied as they are."""

    folder: ModelFolder
    model: onnx.ModelProto
    report: dict
    configs: dict[str, str]
    plan: object = None


def graph_values(geo: Geometry) -> dict[str, int | tuple[int, ...]]:
    """Geometry field -> value (per-layer fields as the tuple of their distinct values when they differ)."""
    values: dict[str, int | tuple[int, ...]] = {"hidden": geo.hidden, "layers": geo.layers}
    for name in PER_LAYER:
        distinct = tuple(dict.fromkeys(getattr(geo, name)))
        values[name] = distinct[0] if len(distinct) == 1 else distinct
    return values


def check_config(folder: ModelFolder, geo: Geometry) -> None:
    """Exit 2 when a config states a shape value the graph does not have (the first, with both values)."""
    values = graph_values(geo)
    for what, (name, key, stated) in folder.stated().items():
        if values.get(what) is not None and values[what] != stated:
            raise BadInputError(f"{folder.path / name}: {key} is {stated} but the graph has {values[what]}")


def _default_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {i.name: (1, SEQUENCE) for i in model.graph.input
            if i.name in ("input_ids", "attention_mask", "position_ids", "token_type_ids")}


def token_samples(model: onnx.ModelProto, folder: ModelFolder, seed: int = 0) -> Dataset:
    """Random token ids over the vocabulary, full attention masks, positions 0..S-1: for a model folder
    pruned without --calib (the width criteria and depth need activations of token inputs)."""
    vocab = get(folder.configs.get("genai_config.json", {}), ("model", "vocab_size")) or \
        get(folder.configs.get("config.json", {}), ("vocab_size",)) or 2
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in _default_shapes(model):
        if name == "input_ids":
            arrays[name] = rng.integers(0, int(vocab), (SAMPLES, 1, SEQUENCE)).astype(np.int64)
        elif name == "position_ids":
            arrays[name] = np.tile(np.arange(SEQUENCE, dtype=np.int64), (SAMPLES, 1, 1))
        elif name == "attention_mask":
            arrays[name] = np.ones((SAMPLES, 1, SEQUENCE), np.int64)
        else:
            arrays[name] = np.zeros((SAMPLES, 1, SEQUENCE), np.int64)
    return Dataset(arrays)


def _uniform(folder: ModelFolder, geo: Geometry) -> None:
    """Refuse per-layer values that differ where the config the runtime reads states one value
    (genai_config.json in a GenAI folder: ONNX Runtime GenAI never reads config.json)."""
    stated = folder.stated()
    for what in PER_LAYER:
        distinct = sorted(set(getattr(geo, what)))
        if what in stated and len(distinct) > 1 and (folder.kind == "hf" or stated[what][0] == "genai_config.json"):
            name, key, _ = stated[what]
            raise BadInputError(f"the pruned layers keep different {what.replace('_', ' ')} ({', '.join(map(str, distinct))}) "
                                f"but {name} states one {key}: prune with --ratio R --scope local or a plan with equal "
                                "counts per layer, or give the .onnx file alone")


def new_configs(folder: ModelFolder, geo: Geometry) -> tuple[dict[str, str], dict]:
    """The config texts with every stated shape value taken from `geo`, and {file: {key: [before, after]}}."""
    values, texts, changes = graph_values(geo), {}, {}
    for name, document in folder.configs.items():
        updated = copy.deepcopy(document)
        for path, what in KEYS[name].items():
            before = get(document, path)
            if not isinstance(before, int) or isinstance(before, bool):
                continue
            after = values.get(what)
            if not isinstance(after, int):  # differs per layer (refused where the runtime reads it)
                log.warning("%s: %s left at %s: the pruned layers keep %s", name, ".".join(path), before, after)
                continue
            put(updated, path, after)
            if after != before:
                changes.setdefault(name, {})[".".join(path)] = [before, after]
        texts[name] = json.dumps(updated, indent=4 if name == "genai_config.json" else 2) + "\n"
    return texts, changes


def _geometry(model: onnx.ModelProto, shapes, folder: ModelFolder, when: str) -> Geometry:
    head_size = folder.stated().get("head_size", (None, None, None))[2]
    if head_size is None and "heads" in folder.stated() and "hidden" in folder.stated():
        head_size = folder.stated()["hidden"][2] // folder.stated()["heads"][2]
    try:
        return geometry(model, shapes, head_size)
    except ValueError as exc:
        raise BadInputError(f"{folder.path}: cannot read the decoder's layers from the {when} graph ({exc}); "
                            "give the .onnx file alone") from None


def prune_folder(path, options: PruneOptions, calib=None, eval_data=None, **more) -> FolderResult:
    """Prune the model of a folder and work out its new configs (nothing is written here)."""
    folder = open_folder(path)
    dense = load_model(folder.model)
    templates = folder.cache_templates()
    stripped, cache = strip(dense, *(templates or (None, None)))
    cached = [i.name for i in stripped.graph.input if i.name.startswith("past")]
    if cached and options.target.depth:  # a cache of plain ops stays in the interface, one entry per layer
        raise BadInputError(f"--depth on {path}: its model keeps a KV cache of plain ops ({cached[0]}, ...) that "
                            "onnxprune cannot renumber; export it without the cache, or use width pruning")
    shapes = dict(options.input_shapes or _default_shapes(stripped))
    check_config(folder, _geometry(stripped, shapes, folder, "given"))
    if calib is None:
        calib = token_samples(stripped, folder, options.seed)
    if eval_data is None:  # synthetic integers would be out of the vocabulary and the masks not masks
        eval_data = token_samples(stripped, folder, options.seed + 1)
    result = prune(stripped, calib=calib, eval_data=eval_data, options=replace(options, input_shapes=shapes), **more)
    geo = _geometry(result.model, shapes, folder, "pruned")
    _uniform(folder, geo)
    texts, changes = new_configs(folder, geo)
    report = {**result.report, "input": str(path),
              "folder": {"kind": folder.kind, "model": folder.model.name, "config_changes": changes,
                         "copied": [p.name for p in folder.others]}}
    return FolderResult(folder, restore(result.model, cache), report, texts, result.plan)
