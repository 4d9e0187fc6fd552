"""Session-wide guards: no test may leave a dpshm shared-memory segment in
/dev/shm or a child process running. Both make the session fail."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import psutil
import pytest

SHM_DIR = Path("/dev/shm")


def _dpshm_segments() -> set[str]:
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if "dpshm" in p.name.lower()}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._dpshm_shm_before = _dpshm_segments()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    problems = []
    before = getattr(session.config, "_dpshm_shm_before", set())
    leaked = sorted(_dpshm_segments() - before)
    if leaked:
        problems.append(f"shared-memory segments left in /dev/shm: {leaked}")
    children = psutil.Process(os.getpid()).children(recursive=True)
    # resource trackers / forkservers of multiprocessing are infrastructure, not strays
    stray = [
        c
        for c in children
        if not any("resource_tracker" in a or "forkserver" in a for a in _cmdline(c))
    ]
    if stray:
        problems.append(
            "child processes still running: "
            + ", ".join(f"{c.pid} {' '.join(_cmdline(c))[:120]}" for c in stray)
        )
        for c in stray:
            with contextlib.suppress(psutil.Error):
                c.kill()
    if problems:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        for p in problems:
            if tr is not None:
                tr.write_line(f"dpshm hygiene FAILED: {p}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name unique to this test, usable for rings and LSL streams."""
    return f"t{uuid.uuid4().hex[:10]}"
