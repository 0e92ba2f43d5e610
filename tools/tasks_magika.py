"""magika's task: file-type accuracy on files this machine holds (Debian, Python, headers). The task
protocol and shared helpers are in tools/tasks.py."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np

from onnxprune.load import zoo
from tasks import EvalSet, Task, batched, wheel_member


#: file suffix -> magika content type, for files found on this machine
MAGIKA_SUFFIXES = {".py": "python", ".json": "json", ".html": "html", ".c": "c", ".h": "c", ".sh": "shell",
                   ".png": "png", ".pdf": "pdf", ".xml": "xml", ".css": "css", ".js": "javascript",
                   ".md": "markdown", ".gz": "gzip", ".svg": "svg", ".ttf": "ttf", ".jpg": "jpeg",
                   ".yaml": "yaml", ".yml": "yaml", ".csv": "csv", ".pl": "perl", ".rb": "ruby", ".pyc": "pythonbytecode",
                   ".zip": "zip", ".whl": "zip", ".toml": "toml", ".rst": "rst", ".so": "elf", ".ini": "ini",
                   ".pem": "pem", ".cpp": "cpp", ".java": "java", ".go": "go", ".rs": "rust", ".tex": "latex",
                   ".jar": "jar", ".bz2": "bzip", ".xz": "xz", ".tar": "tar", ".gif": "gif", ".ico": "ico",
                   ".wav": "wav", ".pyi": "python", ".pxd": "python", ".txt": "txt", ".mo": "txt"}
MAGIKA_ROOTS = ("/usr/share", "/usr/lib/python3", "/usr/include", "/work/main/.venv/lib", "/etc", "/usr/lib/x86_64-linux-gnu")


def magika_features(head: bytes, tail: bytes, beg: int = 1024, end: int = 1024, pad: int = 256) -> np.ndarray:
    """magika 1.0's features from a file's first and last block (4096 bytes; the same bytes for a small
    file): the first `beg` bytes after lstrip (padded after) and the last `end` after
    rstrip (padded before), as int32."""
    b = list(head.lstrip()[:beg])
    e = list(tail.rstrip())
    e = e[len(e) - end:] if len(e) > end else e
    return np.array(b + [pad] * (beg - len(b)) + [pad] * (end - len(e)) + e, np.int32)


def magika_files(per_type: int, seed: int = 0) -> list[tuple[str, str]]:
    """(path, label) for up to `per_type` files of each known suffix under the roots, chosen at random
    by a fixed seed; files under 64 bytes and .mo (binary gettext) are left out."""
    by_label: dict[str, list[str]] = {}
    for root in MAGIKA_ROOTS:
        for dirpath, _, names in os.walk(root):
            for nm in names:
                lab = MAGIKA_SUFFIXES.get(Path(nm).suffix)
                p = os.path.join(dirpath, nm)
                if lab and nm.endswith(".mo") is False and os.path.isfile(p) and not os.path.islink(p):
                    by_label.setdefault(lab, []).append(p)
    rng = random.Random(seed)
    out = []
    for lab in sorted(by_label):
        paths = sorted(by_label[lab])
        rng.shuffle(paths)
        got = 0
        for p in paths:
            if got == per_type:
                break
            try:
                if os.path.getsize(p) >= 64:
                    out.append((p, lab))
                    got += 1
            except OSError:
                continue
    return out


class Magika(Task):
    """File types of real files on this machine (labels from the suffix, mapped onto magika's content types);
    files are split into calibration and evaluation by a hash of their path."""

    name = "magika"
    metric = "file-type accuracy %"
    default_eval_n = 8  # files per type

    def _labels(self) -> list[str]:
        import json
        raw = wheel_member(zoo.MODELS["magika"].package, zoo.MODELS["magika"].version,
                           "magika/models/standard_v3_3/config.min.json")
        return json.loads(raw)["target_labels_space"]

    @staticmethod
    def _is_eval(path: str) -> bool:
        return hashlib.sha1(path.encode()).digest()[0] % 2 == 0

    def _read(self, paths: list[str]) -> np.ndarray:
        feats = []
        for p in paths:
            with open(p, "rb") as fh:
                head = fh.read(4096)
                fh.seek(max(0, os.path.getsize(p) - 4096))
                tail = fh.read(4096)
            feats.append(magika_features(head, tail))
        return np.stack(feats)

    def evaluation(self, n=None):
        files = [(p, lab) for p, lab in magika_files(2 * (n or self.default_eval_n)) if self._is_eval(p)]
        x = self._read([p for p, _ in files])
        labels = [lab for _, lab in files]
        return EvalSet(batched("bytes", x, 64), labels, f"{len(labels)} files, {len(set(labels))} types",
                       {"paths": [p for p, _ in files]})

    def calibration(self, n=32):
        files = [p for p, _ in magika_files(max(2, n // 10 + 2), seed=1) if not self._is_eval(p)]
        random.Random(3).shuffle(files)
        return {"bytes": self._read(files[:n])}

    def predict(self, sess, ev):
        labels = self._labels()
        return [labels[k] for (p,) in self.run(sess, ev) for k in p.argmax(1)]

    def score(self, preds, ev, dense_preds):
        return {"score": 100 * float(np.mean([a == b for a, b in zip(ev.labels, preds)])),
                "agree with dense %": 100 * float(np.mean([a == b for a, b in zip(dense_preds, preds)]))}
