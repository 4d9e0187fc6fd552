"""What every command group of the ``dpshm`` command line shares.

The help formatter, the namespace flag, console logging and stopping on signals.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator

from dpshm import config as C


class FMT(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only when there is a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], "") or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def ns_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--namespace",
        "-n",
        default=None,
        help=f"supervisor namespace (default: ${C.ENV_NAMESPACE} or {C.DEFAULT_NAMESPACE!r})",
    )


def setup_logging(level: str) -> None:
    lvl = getattr(logging, str(level).upper(), None)
    if not isinstance(lvl, int):
        raise C.ConfigError(f"--log-level {level!r} is not a level; use DEBUG, INFO, WARNING")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    logging.getLogger("dpshm").setLevel(min(lvl, logging.INFO))
    for h in logging.getLogger().handlers:
        h.setLevel(lvl)


def namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return C.validate_namespace(args.namespace, "--namespace")
    return C.namespace_from_env()


def until(duration: float | None) -> Callable[[], bool]:
    end = None if duration is None else time.monotonic() + duration
    return lambda: end is not None and time.monotonic() >= end


_ctrl_c = {"seen": False}  # a Ctrl-C came while noting_ctrl_c() was in force


def _note_and_interrupt(signum: int, frame: object) -> None:
    _ctrl_c["seen"] = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def noting_ctrl_c() -> Iterator[None]:
    """Within: Ctrl-C raises ``KeyboardInterrupt`` as ever, and is also noted.

    CPython can lose that exception: raised while an import runs inside some C
    extension's initialisation (``xml.etree``'s ``_elementtree`` importing
    ``pyexpat``, which ``dpshm.lsl`` imports), it is swallowed and the command
    runs on as if no Ctrl-C came (``dpshm demo`` then never stopped). A noted
    Ctrl-C is honoured by :func:`stop_on_signals`. Main thread only; the
    previous SIGINT handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _ctrl_c["seen"] = False
    previous = signal.signal(signal.SIGINT, _note_and_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """From now on SIGINT (Ctrl-C) and SIGTERM set ``stop`` (a new event by default).

    Call it before the command starts anything. A ``KeyboardInterrupt`` raised
    in the middle of a start-up can land between a lock's acquire and its
    ``try`` (logging's handler lock, for one), leaving the lock held: the
    threads already running then block on their next log line, and the clean-up
    waits on them for ever (``dpshm demo`` hung, its rings left behind). With
    the handler in place first, a Ctrl-C lets the start-up finish and the
    command then stops the ordinary way.
    """
    if stop is None:
        stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if _ctrl_c["seen"]:  # one came earlier, and its KeyboardInterrupt was lost
        stop.set()
    return stop
