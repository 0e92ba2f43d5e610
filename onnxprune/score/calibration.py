"""Calibration: load samples from any source and gather streaming activation statistics.

Sources: a .npz (see data.py), a folder of .npy/.npz files or images, any iterable of feed dicts,
or an ONNX Runtime `CalibrationDataReader` (anything with `get_next()`). Statistics come from ONNX
Runtime passes, each exposing a memory-bounded chunk of the needed tensors; per channel they are
accumulated batch by batch (sums, absolute sums, zero counts, Gram matrices), never by holding
all activations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import onnx

from onnxprune.load.data import Dataset, load_npz
from onnxprune.load.rows import Rows
from onnxprune.errors import BadInputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_IMAGE_PIXELS = 50_000_000  # decoded before any resize: 600 MB as float32 RGB
GRAM_LIMIT = 4096  # channels above this get no Gram matrix (memory grows with its square)
GRAM_ROWS = 16384  # rows per float32 block of sums and Gram products: rounding far below the ridge


@dataclass
class ImageOptions:
    """How a folder of images becomes model input: resize, scale to [0, 1], normalize, lay out."""

    resize: tuple[int, int] | None = None  # (height, width)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    grayscale: bool = False


def load_calibration(source, input_ranks: Mapping[str, int], image: ImageOptions | None = None,
                     limit: int | None = None) -> Dataset:
    """A Dataset from a .npz, a folder, an iterable of feed dicts or a CalibrationDataReader."""
    if isinstance(source, Dataset):
        data = source
    elif hasattr(source, "path") and hasattr(source, "options"):  # a folder with image options (the CLI)
        data = _load_folder(Path(source.path), input_ranks, source.options, limit)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            data = _load_folder(path, input_ranks, image or ImageOptions(), limit)
        else:
            data = load_npz(path, input_ranks, limit)
    elif hasattr(source, "get_next"):
        data = _from_feeds(_reader_feeds(source), input_ranks)
    elif isinstance(source, Iterable):
        data = _from_feeds(source, input_ranks)
    else:
        raise BadInputError(f"calibration data of type {type(source).__name__} is not supported; "
                            "give a .npz, a folder, an iterable of feed dicts or a CalibrationDataReader")
    return data.take(limit) if limit else data


def _reader_feeds(reader):
    while True:
        feed = reader.get_next()
        if feed is None:
            return
        yield feed


def _from_feeds(feeds: Iterable[Mapping[str, np.ndarray]], input_ranks: Mapping[str, int]) -> Dataset:
    """Each feed is one batch; it is split into samples along the batch axis when every input has one of
    the same length. Otherwise the leading axes are not a shared batch axis (a sequence model's frames
    beside its (1, 1, H) state) and the feed is one sample as it is."""
    columns: dict[str, list[np.ndarray]] = {name: [] for name in input_ranks}
    for feed in feeds:
        missing = [n for n in input_ranks if n not in feed]
        if missing:
            raise BadInputError(f"calibration feed lacks input(s) {missing}; it has {sorted(feed)}")
        arrays = {name: np.asarray(feed[name]) for name in input_ranks}
        for name, rank in input_ranks.items():
            if arrays[name].ndim != rank:
                raise BadInputError(f"calibration feed '{name}' has rank {arrays[name].ndim}; the input has rank {rank}")
        leading = {a.shape[0] if a.ndim else 1 for a in arrays.values()}
        for name, arr in arrays.items():
            if len(leading) > 1 or arr.ndim == 0:
                columns[name].append(arr)
            else:
                columns[name].extend(arr[i:i + 1] for i in range(arr.shape[0]))
    if not any(columns.values()):
        raise BadInputError("calibration data yielded no samples")
    return Dataset({k: np.stack(v) for k, v in columns.items()})


def _load_folder(path: Path, input_ranks: Mapping[str, int], image: ImageOptions, limit: int | None = None) -> Dataset:
    files = sorted(p for p in path.iterdir() if p.is_file())
    arrays = [p for p in files if p.suffix in (".npy", ".npz")]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES][:limit]  # --calib-limit before decoding
    if len(input_ranks) != 1 and images:
        raise BadInputError(f"{path}: images can only feed a single-input model; this one has {list(input_ranks)}")
    if arrays:
        feeds = []
        from onnxprune.load.npz import read_arrays, read_npy
        for p in arrays:
            if p.suffix == ".npz":  # only the model's inputs, within the size limit
                z = read_arrays(p, input_ranks)
                z.pop("__files__")
                feeds.append(z)
            else:
                feeds.append({next(iter(input_ranks)): read_npy(p)})
        feeds = [{k: (v if v.ndim == input_ranks[k] else v[None]) for k, v in f.items()} for f in feeds]
        return _from_feeds(feeds, input_ranks)
    if images:
        return Dataset({next(iter(input_ranks)): ImageRows(path, images, image)})
    raise BadInputError(f"{path}: no .npy, .npz or image files")


class ImageRows(Rows):
    """A folder's images as a stack of samples [N, 1, C, H, W] (or NHWC), each decoded when its batch is
    read: 256 images of 640x640 are 1.26 GB as float32, a batch of them a few MB. The first image is
    decoded now (its shape is the stack's); without --resize every other image's size is read from its
    header now, so a mixed folder fails before any work."""

    def __init__(self, folder: Path, files: list[Path], opt: ImageOptions):
        self.folder, self.files, self.opt = folder, files, opt
        first = _read_image(files[0], opt)
        self.shape, self.dtype = (len(files), 1) + first.shape, first.dtype
        if opt.resize is None:
            size = _image_size(files[0])
            odd = next((p for p in files[1:] if _image_size(p) != size), None)
            if odd is not None:
                raise BadInputError(f"{folder}: images differ in size ({files[0].name} gives {first.shape}, "
                                    f"{odd.name} is {'x'.join(map(str, _image_size(odd)[::-1]))} pixels); "
                                    "pass --resize HxW")

    def read(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx),) + self.shape[1:], self.dtype)
        for k, i in enumerate(idx):
            arr = _read_image(self.files[int(i)], self.opt)
            if arr.shape != self.shape[2:]:
                raise BadInputError(f"{self.folder}: images differ in size ({self.files[0].name} gives "
                                    f"{self.shape[2:]}, {self.files[int(i)].name} {arr.shape}); pass --resize HxW")
            out[k, 0] = arr
        return out


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image's header, nothing decoded; a file Pillow cannot open is reported
    as when it is decoded."""
    from PIL import Image
    try:
        with Image.open(path) as raw:
            return raw.size
    except Exception:  # noqa: BLE001
        _read_image(path, ImageOptions())  # raises the one-line message
        raise


def _read_image(path: Path, opt: ImageOptions) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise BadInputError("reading images needs Pillow: pip install pillow") from None
    try:  # corrupt, truncated or bomb files: one line naming the file
        with Image.open(path) as raw:
            if raw.width * raw.height > MAX_IMAGE_PIXELS:
                raise BadInputError(f"{path}: {raw.width}x{raw.height} pixels is over the limit of "
                                    f"{MAX_IMAGE_PIXELS:,}; resize the images first")
            img = raw.convert("L" if opt.grayscale else "RGB")
        if opt.resize:
            img = img.resize((opt.resize[1], opt.resize[0]))
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    arr = (arr - np.asarray(opt.mean, np.float32)) / np.asarray(opt.std, np.float32)
    return arr.transpose(2, 0, 1) if opt.layout.upper() == "NCHW" else arr


# ---- streaming statistics --------------------------------------------------------------------

def _ones(n: int) -> np.ndarray:
    """A float32 vector of n ones (at most GRAM_ROWS), shared."""
    global _ONES
    if len(_ONES) < n:
        _ONES = np.ones(max(n, min(GRAM_ROWS, 2 * len(_ONES))), np.float32)
    return _ONES[:n]


_ONES = np.ones(0, np.float32)


@dataclass
class ChannelStats:
    """Per-channel statistics of one tensor along one axis, accumulated over every other axis.

    Sums and the Gram are accumulated about a per-channel shift (the first batch's mean) from float32
    block products summed in float64, so the covariance keeps its precision when a channel's mean
    dwarfs its spread; `sum`, `sq_sum` and `gram` give the raw (unshifted) totals."""

    axis: int
    count: int = 0
    abs_sum: np.ndarray | None = None
    zeros: np.ndarray | None = None
    want_gram: bool = False
    shift: np.ndarray | None = None
    shifted_sum: np.ndarray | None = None
    shifted_sq: np.ndarray | None = None
    shifted_gram: np.ndarray | None = None

    def add(self, value: np.ndarray) -> None:
        rows = np.moveaxis(value, self.axis, -1).reshape(-1, value.shape[self.axis]).astype(np.float32, copy=False)
        if self.shift is None:
            c = rows.shape[1]
            self.shift = rows.mean(0, dtype=np.float64).astype(np.float32)
            self.shifted_sum, self.shifted_sq, self.abs_sum, self.zeros = (np.zeros(c) for _ in range(4))
            if self.want_gram and c <= GRAM_LIMIT:
                self.shifted_gram = np.zeros((c, c))
        self.count += rows.shape[0]
        for start in range(0, rows.shape[0], GRAM_ROWS):  # float32 blocks (fast, contiguous), float64 totals
            raw = rows[start:start + GRAM_ROWS]
            ones = _ones(len(raw))  # column sums as BLAS products: 3-4x numpy's reduce over narrow rows
            self.abs_sum += ones @ np.abs(raw)
            self.zeros += ones @ (raw == 0).view(np.uint8).astype(np.float32)  # exact: counts below 2**24
            block = raw - self.shift
            self.shifted_sum += block.sum(0)
            if self.shifted_gram is None:
                self.shifted_sq += np.square(block).sum(0)
                continue
            gram = block.T @ block  # BLAS sgemm
            self.shifted_gram += gram
            self.shifted_sq += np.diagonal(gram)

    @property
    def sum(self) -> np.ndarray:
        return self.shifted_sum + self.count * self.shift.astype(np.float64)

    @property
    def sq_sum(self) -> np.ndarray:
        s = self.shift.astype(np.float64)
        return self.shifted_sq + 2 * s * self.shifted_sum + self.count * s * s

    @property
    def gram(self) -> np.ndarray | None:
        if self.shifted_gram is None:
            return None
        s, t = self.shift.astype(np.float64), self.shifted_sum
        return self.shifted_gram + np.outer(s, t) + np.outer(t, s) + self.count * np.outer(s, s)

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)

    @property
    def mean_abs(self) -> np.ndarray:
        return self.abs_sum / max(self.count, 1)

    @property
    def apoz(self) -> np.ndarray:
        """Average percentage of zeros: how often the channel is exactly zero (dead after ReLU)."""
        return self.zeros / max(self.count, 1)

    def covariance(self) -> np.ndarray | None:
        if self.shifted_gram is None:
            return None
        m = self.shifted_sum / max(self.count, 1)  # about the shift: no cancellation against the mean
        cov = self.shifted_gram / max(self.count, 1)
        for start in range(0, len(m), 256):  # in place, a block of rows at a time: no n x n outer product
            cov[start:start + 256] -= np.outer(m[start:start + 256], m)
        return cov


@dataclass
class Statistics:
    """Channel statistics keyed by (tensor, axis), from one pass over the calibration data."""

    stats: dict[tuple[str, int], ChannelStats] = field(default_factory=dict)
    samples: int = 0

    def get(self, tensor: str, axis: int) -> ChannelStats | None:
        return self.stats.get((tensor, axis))

    def drop_grams(self) -> None:
        """Free the Gram matrices (up to GRAM_BUDGET) once nothing will score or solve from them."""
        for st in self.stats.values():
            st.shifted_gram = None


def collect_statistics(model: onnx.ModelProto, data: Dataset, wanted: Mapping[tuple[str, int], bool],
                       batch_size: int = 8, progress: bool = False, shapes: Mapping | None = None,
                       budget: int | None = None) -> Statistics:
    """Stream `model` over `data`, exposing the wanted tensors a memory-bounded chunk at a time (see
    passplan.py; `shapes` gives each tensor's shape for one sample); `wanted[(t, axis)]` asks for a Gram.
    Each chunk's pass runs only the nodes between the previous chunk and this one, reading what earlier
    passes left behind: every node runs once per sample."""
    from onnxprune.score.passplan import DEFAULT_BUDGET, plan_passes, tensor_bytes
    from onnxprune.score.stream import Streamer, needed_nodes

    order = {name: i for i, name in enumerate(t for n in model.graph.node for t in n.output)}
    tensors = sorted({t for t, _ in wanted}, key=lambda t: (order.get(t, -1), t))
    batch_size, chunks = plan_passes(tensors, tensor_bytes(shapes or {}, tensors), batch_size,
                                     budget or DEFAULT_BUDGET)
    result = Statistics({key: ChannelStats(key[1], want_gram=gram) for key, gram in wanted.items()})
    segments, done = [], set()  # chunk k's pass runs only the nodes no earlier pass ran (score/stream.py)
    for chunk in chunks:
        segments.append([i for i in needed_nodes(model, chunk) if i not in done])
        done.update(segments[-1])
    streamer = Streamer(model, segments, chunks, data, batch_size)
    try:
        for chunk in chunks:
            mine = [(key, st) for key, st in result.stats.items() if key[0] in set(chunk)]
            batches = streamer.run()
            if progress:
                from tqdm import tqdm
                batches = tqdm(batches, total=-(-len(data) // streamer.batch_size), desc="calibration", leave=False)
            for _, _, values in batches:
                for (t, axis), st in mine:
                    st.add(np.asarray(values[t]))
    finally:
        streamer.close()
    result.samples = len(data)
    return result
