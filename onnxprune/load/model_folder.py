"""Model folders: an ONNX Runtime GenAI folder (`genai_config.json` + its decoder model) or a Hugging Face /
Optimum export folder (`config.json` + `model.onnx`), read as one unit.

The config keys that describe the decoder's shape, per file, as (key path, geometry field):
genai_config.json keeps them under model.decoder; config.json at the top (text_config for the
multimodal ones is not handled). Values that follow the graph are written back by the caller.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from onnxprune.errors import BadInputError
from onnxprune.load.destinations import external_data_files

GENAI, HF = "genai_config.json", "config.json"
GENAI_KEYS = {("model", "decoder", "num_attention_heads"): "heads",
              ("model", "decoder", "num_key_value_heads"): "kv_heads",
              ("model", "decoder", "head_size"): "head_size",
              ("model", "decoder", "hidden_size"): "hidden",
              ("model", "decoder", "num_hidden_layers"): "layers"}
HF_KEYS = {("num_attention_heads",): "heads", ("num_key_value_heads",): "kv_heads", ("head_dim",): "head_size",
           ("hidden_size",): "hidden", ("intermediate_size",): "intermediate", ("num_hidden_layers",): "layers"}
KEYS = {GENAI: GENAI_KEYS, HF: HF_KEYS}


@dataclass
class ModelFolder:
    """A folder's model file, its configs (file name -> parsed JSON) and every other file in it."""

    path: Path
    model: Path
    configs: dict[str, dict] = field(default_factory=dict)
    others: list[Path] = field(default_factory=list)  # copied unchanged (tokenizer, chat template, ...)

    @property
    def kind(self) -> str:
        return "genai" if GENAI in self.configs else "hf"

    def stated(self) -> dict[str, tuple[str, str, int]]:
        """Geometry field -> (file, dotted key, value) for every shape value the configs state."""
        found = {}
        for name, keys in KEYS.items():
            for path, what in keys.items():
                value = get(self.configs.get(name, {}), path)
                if isinstance(value, int) and not isinstance(value, bool) and what not in found:
                    found[what] = (name, ".".join(path), value)
        return found

    def cache_templates(self) -> tuple[tuple[str, str], tuple[str, str]] | None:
        """(past key/value name templates, present ones) from genai_config.json."""
        decoder = get(self.configs.get(GENAI, {}), ("model", "decoder")) or {}
        ins, outs = decoder.get("inputs", {}), decoder.get("outputs", {})
        try:
            return ((ins["past_key_names"], ins["past_value_names"]),
                    (outs["present_key_names"], outs["present_value_names"]))
        except (KeyError, TypeError):
            return None


def get(document: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


def put(document: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


def is_model_folder(path: str | os.PathLike) -> bool:
    p = Path(os.path.expanduser(os.fspath(path)))
    return p.is_dir() and ((p / GENAI).is_file() or (p / HF).is_file())


def open_folder(path: str | os.PathLike) -> ModelFolder:
    """Read a model folder's configs and find its model (BadInputError, exit 2, with one line)."""
    folder = Path(os.path.expanduser(os.fspath(path)))
    configs = {}
    for name in (GENAI, HF):
        if (folder / name).is_file():
            try:
                configs[name] = json.loads((folder / name).read_text())
            except (OSError, ValueError) as exc:
                raise BadInputError(f"{folder / name}: not readable JSON ({str(exc).splitlines()[0]})") from None
    if not configs:
        raise BadInputError(f"{path}: a folder without {GENAI} or {HF}; give the .onnx file instead")
    filename = get(configs.get(GENAI, {}), ("model", "decoder", "filename")) or "model.onnx"
    model = folder / filename
    if not model.is_file() or Path(filename).is_absolute() or ".." in Path(filename).parts:
        candidates = sorted(folder.glob("*.onnx"))
        if GENAI in configs or len(candidates) != 1:
            raise BadInputError(f"{path}: no model file {filename} in the folder")
        model = candidates[0]
    data = {p.name for p in external_data_files(model)}  # rewritten with the model, never copied stale
    others = sorted(p for p in folder.iterdir() if p.is_file() and p != model and p.name not in configs
                    and p.name not in data and not p.name.startswith("."))
    return ModelFolder(folder, model, configs, others)
