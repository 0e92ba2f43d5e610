"""A search's worker processes log at the command line's level: `search -q` printed every candidate's
warnings (a spawned process starts with logging unconfigured, whose last-resort handler prints warnings)."""

from __future__ import annotations

import logging
from pathlib import Path

from onnxprune import progress
from onnxprune.search.executors import LocalExecutor


def warns(job: dict) -> dict:
    """A candidate that logs a warning and an info line, then finishes."""
    log = logging.getLogger(progress.LOGGER)
    log.warning("candidate warning %s", job["spec"]["id"])
    log.info("candidate info %s", job["spec"]["id"])
    Path(job["out"], f"{job['spec']['id']}.json").write_text("{}")
    return {}


def test_workers_log_at_the_parents_level(tmp_path, capfd):
    logger = logging.getLogger(progress.LOGGER)
    saved = (logger.level, list(logger.handlers), logger.propagate, dict(progress._state))
    try:
        seen = {}
        for flags, job in (({"quiet": True}, "c000"), ({}, "c001"), ({"verbose": 1}, "c002")):
            progress.configure(**flags)
            assert LocalExecutor(1).run([{"spec": {"id": job}, "out": str(tmp_path)}], warns) == []
            seen[job] = capfd.readouterr().err
        assert "candidate" not in seen["c000"]
        assert "onnxprune: WARNING: candidate warning c001" in seen["c001"] and "info" not in seen["c001"]
        assert "candidate warning c002" in seen["c002"] and "candidate info c002" in seen["c002"]
    finally:
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]
        logger.propagate = saved[2]
        progress._state.update(saved[3])
