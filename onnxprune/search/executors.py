"""Where a search's candidates are made and scored: local worker processes or Ray tasks, one interface.

An executor takes the candidate jobs and the `evaluate(job)` function and, when `run` returns, has
left each finished candidate's files (`cNNN.json` last, so its presence means done) in the job's
`out` folder; it returns the candidates that failed twice, with their error. A worker that dies loses
only its candidate, which is run once more. Latency is not measured here: the search times every
candidate afterwards in the driver process, all in one interleaved pass on one machine (timing.py).

`RayExecutor` imports ray only when it is made (`--ray ADDRESS`; ray is the optional extra
`onnxprune[ray]`). Its tasks get the model and data files through Ray's object store and send the
candidate's files back, so the nodes of a cluster need onnxprune installed but no shared folder.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Callable, Protocol

from onnxprune.errors import BadInputError, first_line
from onnxprune.progress import LOGGER

RAY_INSTALL = "pip install 'onnxprune[ray]'"
INPUTS = ("model", "calib", "data")  # the job's file paths a Ray task needs on its node


class Executor(Protocol):
    """Runs candidate jobs; see the module docstring."""

    def run(self, jobs: list[dict], evaluate: Callable[[dict], dict]) -> list[dict]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Every job in its own spawned process, at most `workers` at once. (One process per job, not a
    pool: a process that dies would break a pool and fail the jobs queued behind it.)"""

    def __init__(self, workers: int = 1):
        self.workers = workers

    def run(self, jobs: list[dict], evaluate: Callable[[dict], dict]) -> list[dict]:
        context = multiprocessing.get_context("spawn")  # no fork after ONNX Runtime has started threads
        level = logging.getLogger(LOGGER).getEffectiveLevel()  # a spawned process starts unconfigured
        queue = [(job, 1) for job in jobs]
        running: list[tuple[dict, int, multiprocessing.Process]] = []
        failed = []
        while queue or running:
            while queue and len(running) < self.workers:
                job, attempt = queue.pop(0)
                process = context.Process(target=_local_worker, args=(evaluate, job, level), daemon=True)
                with _one_blas_thread():
                    process.start()
                running.append((job, attempt, process))
            running[0][2].join(timeout=0.2)
            for entry in [r for r in running if r[2].exitcode is not None]:
                running.remove(entry)
                job, attempt, process = entry
                if process.exitcode == 0:
                    continue
                if attempt < 2:
                    queue.append((job, attempt + 1))
                else:
                    failed.append({"id": job["spec"]["id"], "error": _local_failure(job, process.exitcode)})
        return failed

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _one_blas_thread():
    """OMP_NUM_THREADS=1 for a process started inside, unless the user set it: K workers on K cores
    must not each start a thread per core, and a Ray task of one CPU gets the same setting from Ray,
    so both executors do the same float arithmetic and make the same models."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        yield
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]


def _local_worker(evaluate: Callable[[dict], dict], job: dict, level: int = logging.WARNING) -> None:
    """A worker process's body: the job, or its error in one line beside the candidate, exit 1. Its log
    messages pass at the parent's `level` (a quiet search printed every candidate's warnings)."""
    from onnxprune import progress
    verbose = 0 if level >= logging.WARNING else 1 if level >= logging.INFO else 2
    progress.configure(quiet=level >= logging.ERROR, verbose=verbose)
    error = Path(job["out"]) / f"{job['spec']['id']}.error"
    try:
        evaluate(job)
    except BaseException as exc:  # noqa: BLE001  (anything: recorded for the parent, which retries once)
        error.write_text(first_line(exc) or type(exc).__name__)
        raise SystemExit(1)
    if error.exists():
        error.unlink()


def _local_failure(job: dict, exitcode: int) -> str:
    error = Path(job["out"]) / f"{job['spec']['id']}.error"
    if error.exists():
        return error.read_text()
    return f"the worker process died (exit code {exitcode})"


class RayExecutor:
    """Jobs as Ray tasks of one CPU each. `address` "local" starts a Ray instance on this machine with
    `workers` CPUs (stopped again by `close`); any other address joins that cluster, whose CPUs set
    how many run at once. A Ray instance that is already running in this process is used as it is."""

    def __init__(self, address: str, workers: int = 1):
        try:
            import ray
        except ImportError:
            raise BadInputError(f"--ray: ray is not installed; {RAY_INSTALL}") from None
        self.ray = ray
        self.owned = not ray.is_initialized()
        if self.owned:
            options = {"include_dashboard": False, "log_to_driver": False}
            try:
                if address == "local":
                    ray.init(num_cpus=workers, **options)
                else:
                    ray.init(address=address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BadInputError(f"--ray {address}: cannot start or reach Ray: {first_line(exc)}") from None

    def run(self, jobs: list[dict], evaluate: Callable[[dict], dict]) -> list[dict]:
        ray = self.ray
        task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)  # retries are ours: once, any failure
        shipped = {path: ray.put(Path(path).read_bytes()) for job in jobs for path in _inputs(job).values()}

        def submit(job: dict, attempt: int) -> None:
            files = {key: shipped[path] for key, path in _inputs(job).items()}
            pending[task.remote(evaluate, _portable(job), *[files.get(key) for key in INPUTS])] = (job, attempt)

        pending: dict = {}
        for job in jobs:
            submit(job, 1)
        failed = []
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            job, attempt = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker died (or its node): no result at all
                result = {"error": f"the Ray worker died ({type(exc).__name__})"}
            if "files" in result:
                _write_back(Path(job["out"]), result["files"])
            elif attempt < 2:
                submit(job, attempt + 1)
            else:
                failed.append({"id": job["spec"]["id"], "error": result["error"]})
        return failed

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(ray: str | None, workers: int) -> Executor:
    """`RayExecutor(ray)` when a Ray address is given, else local processes."""
    return RayExecutor(ray, workers) if ray else LocalExecutor(workers)


def _inputs(job: dict) -> dict[str, str]:
    return {key: job[key] for key in INPUTS if job.get(key)}


def _portable(job: dict) -> dict:
    """The job without this machine's paths: the task fills them in on its own node."""
    return {k: v for k, v in job.items() if k not in INPUTS and k != "out"} | {"names": {
        key: os.path.basename(path) for key, path in _inputs(job).items()}}


def _ray_task(evaluate: Callable[[dict], dict], job: dict, model: bytes, calib: bytes | None,
              data: bytes | None) -> dict:
    """On a Ray worker: the inputs written to a scratch folder, the job run there; returns the
    candidate's files (`cNNN.*`) as bytes, or the error in one line."""
    with tempfile.TemporaryDirectory(prefix="onnxprune_ray_") as scratch:
        local = {k: v for k, v in job.items() if k != "names"}
        for key, content in zip(INPUTS, (model, calib, data)):
            local[key] = None
            if content is not None:
                local[key] = os.path.join(scratch, f"{key}_{job['names'][key]}")
                Path(local[key]).write_bytes(content)
        local["out"] = os.path.join(scratch, "out")
        os.mkdir(local["out"])
        try:
            evaluate(local)
        except Exception as exc:  # noqa: BLE001  (reported to the driver, which retries once)
            return {"error": first_line(exc) or type(exc).__name__}
        prefix = f"{job['spec']['id']}."
        return {"files": {p.name: p.read_bytes() for p in Path(local["out"]).iterdir() if p.name.startswith(prefix)}}


def _write_back(folder: Path, files: dict[str, bytes]) -> None:
    """A task's files into the candidates folder, each atomically, the summary (.json) last."""
    for name in sorted(files, key=lambda n: n.endswith(".json")):
        tmp = folder / f".{name}.part"
        tmp.write_bytes(files[name])
        os.replace(tmp, folder / name)
