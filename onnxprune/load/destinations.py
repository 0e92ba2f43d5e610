"""One guard for every file the tool writes.

A command builds a `Destinations`, registers its inputs (the model and its external data, data files,
teacher, recipe, plan) and claims every output before any work. A claim resolves the path first
(normalized, symlinks followed), then refuses with exit 2: an output that is an input (even with
--force), two outputs that are one file, an existing file without --force, a folder, a parent that
is a file, a folder that cannot be written. The writers here are the only way files are written:
regular files go through a randomly named temporary file and a rename, so no half-written file is
left; a non-regular destination (/dev/stdout, a FIFO) is written directly, never replaced. While a
guard is active, writing to an unclaimed path is an internal error, so no writer can slip past it.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from onnxprune.errors import BadInputError

# Models larger than this are assumed to hold their weights inline (no external data to scan).
_SCAN_LIMIT = 256 * 2**20
_ACTIVE: "Destinations | None" = None
_TEMPS: set[str] = set()  # temporary files being written, removed on any exit (signals included)
_HELD: list[tuple[str, Path]] | None = None  # written, waiting for the end of all_or_nothing()


def resolve(path: str | os.PathLike) -> Path:
    """The path the kernel would write: user folder expanded, symlinks followed, `..` applied."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def is_stream(path: str | os.PathLike) -> bool:
    """A destination written in place, never replaced: /dev/stdout, /dev/fd/N, a device, a FIFO.
    Checked on the path as given: /dev/stdout resolves to whatever stdout is (maybe a regular file)."""
    given = os.path.normpath(os.path.expanduser(os.fspath(path)))
    if given in ("/dev/stdout", "/dev/stderr") or re.fullmatch(r"/(dev|proc/self)/fd/\d+", given):
        return True
    try:
        mode = os.stat(given).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _identity(path: Path) -> tuple:
    """(device, inode) for an existing file, so hard links to an input are caught too."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return ("path", str(path))


def external_data_files(model_path: Path) -> list[Path]:
    """The external data files a model refers to (read from its graph, without loading the data)."""
    try:
        if model_path.stat().st_size > _SCAN_LIMIT:
            return []
        import onnx
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # unreadable models are reported by the loader, with its own message
        return []
    from onnxprune.load.tensors import all_tensors
    files = set()
    for t in all_tensors(model):
        for entry in t.external_data:
            if entry.key == "location":
                files.add(model_path.parent / entry.value)
    return sorted(files)


class Destinations:
    """The inputs and the claimed outputs of one run."""

    def __init__(self, force: bool = False):
        self.force = force
        self.inputs: dict[tuple, tuple[str, Path]] = {}  # identity -> (what, path as given)
        self.claims: dict[tuple, tuple[str, Path]] = {}  # identity -> (flag, resolved path)

    # ---- inputs ------------------------------------------------------------------------------
    def input(self, path: str | os.PathLike | None, what: str, model: bool = False) -> None:
        """Register an input file (a folder: every file in it). Models bring their external data."""
        if path is None or not isinstance(path, (str, os.PathLike)) or str(path).startswith("zoo:"):
            return
        real = resolve(path)
        if real.is_dir():
            try:
                entries = [p for p in real.iterdir() if p.is_file()][:100_000]
            except OSError:
                entries = []
            for p in entries:
                self.inputs[_identity(p)] = (what, Path(path) / p.name)
            return
        self.inputs[_identity(real)] = (what, Path(path))
        if model and real.is_file():
            for data in external_data_files(real):
                self.inputs[_identity(resolve(data))] = (f"{what}'s external data", data)

    # ---- outputs -----------------------------------------------------------------------------
    def claim(self, path: str | os.PathLike, flag: str, model: bool = False) -> Path:
        """Check one output before any work; return the resolved path that writers use."""
        stream = is_stream(path)
        real = Path(os.path.expanduser(os.fspath(path))) if stream else resolve(path)
        shown = f"{flag} {path}" if flag else str(path)
        key = _identity(real)
        if key in self.inputs:
            what, given = self.inputs[key]
            raise BadInputError(f"{shown}: would overwrite the input {what} ({given}); the input is never "
                                "modified, even with --force: choose another path")
        if stream and os.path.realpath(real) == os.devnull:  # discarding twice loses nothing
            self.claims[key] = (flag or "output", real)
            return real
        if key in self.claims:  # the external data file a model may write counts too
            raise BadInputError(f"{shown}: is the same file as {self.claims[key][0]} {self.claims[key][1]}; "
                                "give each output its own path")
        if not stream:
            _check_writable(real, shown, self.force)
        self.claims[key] = (flag or "output", real)
        if model and not stream:  # a model over 2 GB is written with its weights beside it, as PATH.data
            sidecar = real.parent / (real.name + ".data")
            skey = _identity(sidecar)
            if skey in self.inputs:
                raise BadInputError(f"{shown}: its external data file {sidecar.name} would overwrite the input "
                                    f"{self.inputs[skey][0]} ({self.inputs[skey][1]}); choose another path")
            if skey in self.claims:
                raise BadInputError(f"{shown}: its external data file {sidecar} is also {self.claims[skey][0]}; "
                                    "give each output its own path")
            self.claims[skey] = (f"{flag or 'output'} (external data)", sidecar)
        return real

    def folder(self, directory: str | os.PathLike, flag: str, names: Iterable[str]) -> list[Path]:
        """Claim files `names` inside an output folder (--plot DIR, --save-dir DIR)."""
        real = resolve(directory)
        if real.exists() and not real.is_dir():
            raise BadInputError(f"{flag} {directory}: exists and is not a folder")
        return [self.claim(Path(directory) / name, flag) for name in names]

    def allows(self, path: Path) -> bool:
        return _identity(path) in self.claims

    @contextmanager
    def active(self) -> Iterator["Destinations"]:
        """While active, every writer checks that its path was claimed."""
        global _ACTIVE
        previous, _ACTIVE = _ACTIVE, self
        try:
            yield self
        finally:
            _ACTIVE = previous


def _check_writable(real: Path, shown: str, force: bool) -> None:
    """Existing file without --force, a folder, a parent that is a file, a folder we cannot write."""
    if real.is_dir():
        raise BadInputError(f"{shown}: is a folder, expected a file name")
    if real.exists():
        if not real.is_file():
            return  # /dev/stdout, a FIFO: written directly
        if not force:
            raise BadInputError(f"{shown}: already exists; pass --force to overwrite it")
    parent = real.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BadInputError(f"{shown}: {parent} is a file, not a folder")
    try:  # a real probe: permissions, read-only file systems and quotas all show here
        fd, probe = tempfile.mkstemp(prefix=".onnxprune-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BadInputError(f"{shown}: cannot write in {parent} ({exc.strerror or exc})") from None


def check_output(path: str | os.PathLike, force: bool) -> Path:
    """The checks of a claim for a writer used outside any guard (library calls)."""
    real = Path(os.path.expanduser(os.fspath(path))) if is_stream(path) else resolve(path)
    if _ACTIVE is not None:
        if not _ACTIVE.allows(real):  # a writer that skipped the guard: a bug, not bad input
            raise RuntimeError(f"internal: {path} was written without being claimed before the work")
    elif real.is_dir():
        raise BadInputError(f"{path}: is a folder, expected a file name")
    elif real.is_file() and not force:
        raise BadInputError(f"{path}: already exists; pass --force to overwrite it")
    return real


class WriteError(BadInputError):
    """The system refused a write (full disk, quota, permissions changed): one line, exit 2."""


@contextmanager
def temporary_beside(real: Path, suffix: str = ".tmp") -> Iterator[str]:
    """A randomly named temporary file in `real`'s folder, removed unless the caller renamed it.
    An OSError inside becomes a WriteError naming the destination."""
    tmp = None
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=suffix, dir=real.parent)
        os.close(fd)
        _TEMPS.add(tmp)
        yield tmp
    except OSError as exc:
        raise WriteError(f"{real}: cannot write ({exc.strerror or exc}); nothing was written there") from None
    finally:
        if tmp is not None and not (_HELD is not None and any(tmp == held for held, _ in _HELD)):
            _TEMPS.discard(tmp)
            if os.path.lexists(tmp):
                os.unlink(tmp)


def place(tmp: str, real: Path) -> None:
    """Rename a finished temporary file onto its destination, or hold it until every output of an
    all_or_nothing() block is written."""
    os.chmod(tmp, _mode_for(real))
    if _HELD is not None:
        _HELD.append((tmp, real))
    else:
        os.replace(tmp, real)


@contextmanager
def all_or_nothing(keep_on: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """The files written inside land together at the end, by renames that need no space; if a write
    fails (disk full, quota) or anything else interrupts, none of them lands and no temporary is left.
    An exception of a `keep_on` type (a missed gate) still lands what was written. Nested blocks join
    the outermost."""
    global _HELD
    if _HELD is not None:
        yield
        return
    _HELD = []
    land = False
    try:
        yield
        land = True
    except keep_on:
        land = True
        raise
    finally:
        held, _HELD = _HELD, None
        for tmp, real in held:
            if land:
                os.replace(tmp, real)
            elif os.path.lexists(tmp):
                os.unlink(tmp)
            _TEMPS.discard(tmp)


def write_file(path: str | os.PathLike, produce: Callable[[str], None], force: bool = True) -> Path:
    """Write the file that `produce(filename)` creates at `path`: atomically for regular files,
    in place for streams (see is_stream). Returns the path written."""
    real = check_output(path, force)
    if is_stream(real):
        with temporary_beside(Path(tempfile.gettempdir()) / "onnxprune-out") as tmp:
            produce(tmp)
            with open(tmp, "rb") as src:
                _write_stream(real, src.read())
        return real
    with temporary_beside(real) as tmp:
        produce(tmp)
        place(tmp, real)
    return real


def _mode_for(real: Path) -> int:
    """An overwritten file keeps its mode; a new one gets the umask's (mkstemp would give 0600)."""
    try:
        return stat.S_IMODE(os.stat(real).st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def write_bytes(path: str | os.PathLike, data: bytes, force: bool = True) -> Path:
    """Write `data` to `path` (see write_file)."""
    real = check_output(path, force)
    if is_stream(real):
        _write_stream(real, data)
        return real

    def produce(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    return write_file(real, produce, force=True)


def _write_stream(path: Path, data: bytes) -> None:
    """Append mode: stdout redirected with >> keeps what is already there; our own prints go first."""
    sys.stdout.flush()
    try:
        with open(path, "ab") as f:
            f.write(data)
    except BrokenPipeError:  # the reader went away (| head): its choice, not an error
        pass
    except OSError as exc:
        raise WriteError(f"{path}: cannot write ({exc.strerror or exc})") from None


def cleanup_temporaries() -> None:
    """Remove every temporary file still being written (called on signals and at exit)."""
    for tmp in list(_TEMPS):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        _TEMPS.discard(tmp)
