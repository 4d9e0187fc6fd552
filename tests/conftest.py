"""Session-wide guards: no test may leave a dpshm shared-memory segment in
/dev/shm, a namespace directory in the runtime directory, or a child process
running. Each makes the session fail.

Logging: importing dareplane-utils reconfigures logging for the whole process
(``dictConfig``: existing loggers disabled, root handlers incl. a socket handler
to port 9020). That happens once, at configure time, inside
``preserved_logging``; and every test runs inside ``preserved_logging`` too, so
neither an import nor a test can change logging for the tests that follow, and
test order cannot change outcomes.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import struct
import uuid
from pathlib import Path

import psutil
import pytest
from helpers import preserved_logging

SHM_DIR = Path("/dev/shm")


def _dpshm_segments() -> set[str]:
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if "dpshm" in p.name.lower()}


def pytest_configure(config: pytest.Config) -> None:
    # Tests send SIGINT (Ctrl-C) to child Pythons. A runner that starts the session in
    # the background of a non-interactive shell (`cmd &`, nohup) hands it SIGINT
    # ignored, children inherit that, and Python then installs no KeyboardInterrupt
    # handler. A Python handler here is reset to the default on exec in the children.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # run dareplane-utils' one-time dictConfig now, and undo it (see module docstring)
    with preserved_logging(), contextlib.suppress(ImportError):
        importlib.import_module("dareplane_utils.general.ringbuffer")


@pytest.fixture(autouse=True)
def _isolated_logging() -> object:
    with preserved_logging():
        yield


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._dpshm_shm_before = _dpshm_segments()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    problems = []
    before = getattr(session.config, "_dpshm_shm_before", set())
    leaked = sorted(seg for seg in _dpshm_segments() - before if not _foreign(seg))
    if leaked:
        problems.append(f"shared-memory segments left in /dev/shm: {leaked}")
    left = _namespace_dirs_left()
    if left:
        names = [d.name for d in left]
        problems.append(f"namespace directories left in the runtime directory: {names}")
        for d in left:  # reported, then removed: the next session starts clean
            shutil.rmtree(d, ignore_errors=True)
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


def _foreign(seg: str) -> bool:
    """Whether ``seg`` is a ring written by a live process outside this session.

    Other sessions (engineers, CI jobs) run tests on the same machine at the
    same time; their live rings are not this session's leaks. A ring whose
    writer is this process, one of its children or dead is counted.
    """
    try:
        with open(SHM_DIR / seg, "rb") as f:
            head = f.read(88)
    except OSError:
        return True  # gone meanwhile
    if len(head) < 88 or head[:8] != b"DPSHMRNG":
        return False
    (pid,) = struct.unpack_from("<Q", head, 80)  # writer pid (layout: dpshm/shm/ring.py)
    me = os.getpid()
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False  # writer dead: a leak
        return pid != me and me not in {p.pid for p in proc.parents()}
    except psutil.Error:
        return False  # writer dead: a leak


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


_NAMES: set[str] = set()  # every unique_name of this session (namespaces among them)


def _namespace_dirs_left() -> list[Path]:
    """The namespaces named by this session's tests whose directory is still there.

    A supervisor removes its namespace directory when it stops (if empty), and a
    test that makes one by hand removes it; only this session's names are looked
    at, so other sessions on the machine do not count.
    """
    from dpshm.errors import DpshmError
    from dpshm.shm.rundir import runtime_dir

    try:
        root = runtime_dir(create=False)
    except (OSError, DpshmError):  # unsafe or unusable: nothing of ours can be there
        return []
    return sorted(root / n for n in _NAMES if os.path.lexists(root / n))


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name unique to this test, usable for rings, LSL streams and namespaces."""
    name = f"t{uuid.uuid4().hex[:10]}"
    _NAMES.add(name)
    return name


@pytest.fixture
def outlets(unique_name: str):
    """An :class:`lsl_util.OutletFactory` whose outlets are closed after the test."""
    from lsl_util import OutletFactory  # imports pylsl: only for the tests that ask

    with OutletFactory(unique_name) as factory:
        yield factory


@pytest.fixture
def procs(unique_name: str, monkeypatch: pytest.MonkeyPatch):
    """The test's namespace and a list of started children (``supervisor_util.Sup``,
    ``Proc``): each is stopped and the namespace cleaned after the test."""
    from supervisor_util import stop_all

    monkeypatch.setenv("DPSHM_NAMESPACE", unique_name)
    started: list = []
    yield unique_name, started
    stop_all(unique_name, started)
