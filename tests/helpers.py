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
