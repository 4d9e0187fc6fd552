"""Report a kept handler thread that dies of an exception through the module's logger.

A ``DefaultServer`` handler returns a started ``(Thread, Event)`` pair; the
thread runs the module's work. When it raises, Python's default
``threading.excepthook`` prints the traceback on stderr only, which the control
room never sees. :func:`watch` registers the thread with a logger; the hook
installed by :func:`install` (chained to the hook that was there before, which
still runs) logs the death at ERROR, with the traceback, through that logger.

The hook is installed when a server starts serving (not on import). A thread
that dies before it is registered (its handler had not returned yet) is
remembered and reported when :func:`watch` is called.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
import weakref
from typing import Any

__all__ = ["install", "watch"]

_lock = threading.Lock()
_loggers: weakref.WeakKeyDictionary[threading.Thread, logging.Logger] = weakref.WeakKeyDictionary()
_early: weakref.WeakKeyDictionary[threading.Thread, str] = weakref.WeakKeyDictionary()
_previous: Any = None


def _report(logger: logging.Logger, thread: threading.Thread, args: Any) -> None:
    exc = args.exc_value
    logger.error(
        "thread %s died: %s: %s",
        thread.name,
        getattr(args.exc_type, "__name__", args.exc_type),
        exc,
        exc_info=(args.exc_type, exc, args.exc_traceback),
    )


def _report_early(logger: logging.Logger, thread: threading.Thread, text: str) -> None:
    # the same first line as _report; the traceback (rendered when it died) follows
    last = text.rstrip().rsplit("\n", 1)[-1]
    logger.error("thread %s died: %s\n%s", thread.name, last, text.rstrip())


def _hook(args: Any) -> None:
    thread = args.thread
    if thread is not None and args.exc_type is not SystemExit:
        with _lock:
            logger = _loggers.pop(thread, None)
            if logger is None:  # text only: a traceback would keep the thread alive
                _early[thread] = "".join(
                    traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
                )
        if logger is not None:
            with contextlib.suppress(Exception):  # never hide the original output
                _report(logger, thread, args)
    prev = _previous or threading.__excepthook__
    prev(args)


def install() -> None:
    """Install the reporting hook (idempotent; re-installs if replaced since)."""
    global _previous
    with _lock:
        if threading.excepthook is not _hook:
            _previous = threading.excepthook
            threading.excepthook = _hook


def watch(thread: threading.Thread, logger: logging.Logger) -> None:
    """Log ``thread``'s death by an exception at ERROR through ``logger``."""
    install()
    with _lock:
        early = _early.pop(thread, None)
        if early is None:
            _loggers[thread] = logger
    if early is not None:
        _report_early(logger, thread, early)
