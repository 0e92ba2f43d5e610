"""Private temporary folders that do not outlive their process, even one killed with SIGKILL.

Every folder onnxprune makes in the system's temporary directory carries an `owner` file (the
process id and its start time). A process that is killed cannot remove its folders, so the next run
does: the first folder a process makes sweeps away the folders whose owner is gone. A folder without
an owner file (another program's, or an older onnxprune's) is never touched.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import weakref

PREFIX = "onnxprune-"
OWNER = "owner"
_swept = False


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), or None if there is no such process.
    With the pid it names one process: pids are reused, start times with them are not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22 of proc(5); the name may hold spaces


def _me() -> str:
    return f"{os.getpid()} {_start_time(os.getpid()) or ''}"


def _abandoned(folder: str) -> bool:
    try:
        if os.stat(folder, follow_symlinks=False).st_uid != os.getuid():
            return False
        with open(os.path.join(folder, OWNER), encoding="ascii") as f:
            pid, _, started = f.read().strip().partition(" ")
    except (OSError, ValueError, UnicodeDecodeError):
        return False  # not ours to judge
    if not pid.isdigit():
        return False
    if not os.path.exists("/proc/self/stat"):  # no way to tell a live owner from a dead one
        return False
    return _start_time(int(pid)) != started


def sweep(root: str | None = None) -> list[str]:
    """Remove the onnxprune folders in `root` (the temporary directory) whose owner process is gone;
    the folders removed."""
    root = root or tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(root) if n.startswith(PREFIX)]
    except OSError:
        return []
    removed = []
    for name in names:
        folder = os.path.join(root, name)
        if os.path.isdir(folder) and not os.path.islink(folder) and _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def private_dir(kind: str) -> str:
    """A new folder `onnxprune-KIND-XXXX` in the temporary directory, marked with this process as its
    owner. The caller removes it; if the process dies first, a later run does."""
    global _swept
    if not _swept:
        _swept = True
        sweep()
    folder = tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-")
    partial = os.path.join(folder, f".{OWNER}")
    with open(partial, "w", encoding="ascii") as f:
        f.write(_me())
    os.replace(partial, os.path.join(folder, OWNER))  # a sweeper never reads half a line
    return folder


class PrivateDir:
    """A private folder, removed by `cleanup()`, at the end of a `with` block, or when the object is
    collected (like tempfile.TemporaryDirectory, whose folders a killed process leaves behind)."""

    def __init__(self, kind: str) -> None:
        self.name = private_dir(kind)
        self._remove = weakref.finalize(self, shutil.rmtree, self.name, True)

    def cleanup(self) -> None:
        self._remove()

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def process_dir(kind: str) -> str:
    """A private folder removed when the process exits."""
    folder = private_dir(kind)
    atexit.register(shutil.rmtree, folder, True)
    return folder
