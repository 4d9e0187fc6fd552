"""Helpers shared by the tests (import as ``from helpers import ...``)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")

TESTS = Path(__file__).resolve().parent  # tests/ (helpers, worker targets)
ROOT = TESTS.parent  # the repository


def wait_until(pred: Callable[[], T], timeout: float = 5.0, interval: float = 0.005) -> T:
    """Call ``pred`` until it returns something truthy; return that value.

    Raises ``TimeoutError`` naming the predicate when ``timeout`` runs out.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            name = getattr(pred, "__name__", repr(pred))
            raise TimeoutError(f"condition {name!r} not met within {timeout} s")
        time.sleep(interval)


@contextlib.contextmanager
def preserved_logging() -> Iterator[None]:
    """Restore the logging configuration on exit to what it was on entry.

    Covers what ``logging.config.dictConfig`` changes (dareplane-utils runs it on
    import): the root logger's handlers and level, and every logger's
    ``disabled`` flag, level, handlers and ``propagate``. Handlers added inside
    the block are closed. ``tests/conftest.py`` wraps every test in this, so no
    test can change logging for the tests that follow.
    """
    root = logging.getLogger()
    root_handlers, root_level = root.handlers[:], root.level
    loggers = {
        name: (lg.disabled, lg.level, lg.handlers[:], lg.propagate)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    closed: list[logging.Handler] = []
    try:
        yield
    finally:
        # pytest's own capture handlers come and go per test phase: leave them be
        for h in root.handlers[:]:
            if h not in root_handlers and not _is_pytest_handler(h):
                root.removeHandler(h)
                h.close()
                closed.append(h)
        for h in root_handlers:
            if h not in root.handlers and not _is_pytest_handler(h):
                root.addHandler(h)
        root.setLevel(root_level)
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if not isinstance(lg, logging.Logger):
                continue
            if name in loggers:
                lg.disabled, level, lg.handlers[:], lg.propagate = loggers[name]
                lg.setLevel(level)
            else:  # created inside the block: enabled, without the handlers just closed
                lg.disabled = False
                lg.handlers[:] = [h for h in lg.handlers if h not in closed]


def _is_pytest_handler(h: logging.Handler) -> bool:
    return type(h).__module__.startswith("_pytest")


def import_original(module: str) -> ModuleType:
    """Import a dareplane-utils module without its logging side effects.

    Its ``get_logger`` runs ``logging.config.dictConfig`` on first use (at import
    of most of its modules), which disables every existing logger and installs a
    console handler and a socket handler to port 9020 on the root logger.
    ``conftest.py`` triggers that once at session start inside
    :func:`preserved_logging`; this wrapper keeps any later import harmless too.
    """
    with preserved_logging():
        return importlib.import_module(module)


def wait_connected(sub, probe: Callable[[], object], timeout: float = 2.0) -> bool:
    """Repeat ``probe()`` (which should cause a publication) until the ZeroMQ
    subscriber ``sub`` receives something; subscriptions take a moment to reach
    the publisher."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe()
        if sub.socket.poll(20):
            return True
    return False


def wait_for_registry(namespace: str, timeout: float, pid: int | None = None):
    """Wait until a live supervisor (``pid`` if given) has written its registry."""
    from dpshm.errors import SupervisorNotRunningError
    from dpshm.shm import registry

    def ready():
        with contextlib.suppress(SupervisorNotRunningError):
            reg = registry.read_registry(namespace)
            if pid is None or reg.pid == pid:
                return reg
        return None

    ready.__name__ = f"the supervisor of namespace {namespace!r} wrote its registry"
    return wait_until(ready, timeout, interval=0.02)


OTHER_UID = 65534  # `nobody`: the second local user of the security tests


def as_other_user(fn: Callable[[], T], timeout: float = 20.0, uid: int = OTHER_UID) -> T:
    """Run ``fn()`` in a forked child that switched to ``uid`` (a second local user).

    Only root can switch: the caller skips otherwise (``pytest.skip``). The
    child's return value comes back pickled; an exception in the child is
    re-raised here as ``RuntimeError`` with its text. Bounded: a child that
    is still running after ``timeout`` seconds is killed.
    """
    import os
    import pickle
    import select
    import signal

    import pytest

    if os.getuid() != 0:
        pytest.skip("switching to a second uid needs root")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            payload = pickle.dumps(("ok", fn()))
        except BaseException as exc:  # report anything, then leave
            payload = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
            code = 1
        try:
            os.write(w, payload)
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError(f"the uid {uid} child did not finish within {timeout} s")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "error":
        raise RuntimeError(f"in the uid {uid} child: {value}")
    return value


def join_readers(procs, timeout: float = 30.0) -> None:
    """Join multiprocessing children that must end by themselves, each with exit code 0."""
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0, f"{p.name} ended with exit code {p.exitcode}"


def kill_alive(procs) -> None:
    """Kill and reap the multiprocessing children still running (cleanup paths)."""
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)
