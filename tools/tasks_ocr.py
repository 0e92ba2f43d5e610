"""Tasks of the text models FACTS.md names: PP-OCRv4 rec (CER on rendered lines), PP-OCR cls (0/180 on
rendered lines), PP-OCRv4 det (line F1 against the dense model) and ddddocr's common recognizer (exact
match on rendered captchas). The task protocol and shared helpers are in tools/tasks.py."""

from __future__ import annotations

import ast
import functools
import random

import numpy as np
import onnx

from onnxprune.load import zoo
from tasks import (EvalSet, Task, batched, cer, ctc_greedy, find_fonts, match_f1, random_text, render,
                   resize_norm, wheel_member, with_static_dims)


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
