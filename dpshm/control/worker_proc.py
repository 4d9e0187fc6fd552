"""Process workers: the child's entry point and the parent's handle.

A worker is a declared function ``target(ctx)``. Both modes (thread and
process) hand it the same :class:`~dpshm.control.context.WorkerContext`. A process worker runs
:func:`process_main` in a fresh interpreter (``multiprocessing`` spawn
context); it talks to the supervisor over one duplex pipe:

parent -> child
    ``("stop",)``: set ``ctx.stop_event``. End of file (the supervisor went
    away) sets it too, so an orphaned worker winds down by itself.
child -> parent
    ``("log", dict)``: a :class:`logging.LogRecord` as
    :func:`dpshm.dareplane.logrecord.record_to_dict` gives it (formatted
    ``msg``, empty ``args``, a traceback in ``exc_text``), read back with
    :func:`~dpshm.dareplane.logrecord.dict_to_record` and re-emitted by the supervisor on
    ``logging.getLogger("dpshm.worker.<id>")``;
    ``("started", pid)`` once the rings are attached and the target is called;
    ``("error", traceback_text)`` when the target raised (the process then
    exits with code 1).

This module imports neither pylsl nor zmq: a process worker reads the rings
directly and opens no LSL inlet.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import psutil

from dpshm.control.context import (
    WorkerContext,
    attach_all,
    close_all,
    load_target,
    worker_logger_name,
)
from dpshm.dareplane.logrecord import dict_to_record, record_to_dict


class _PipeLogHandler(logging.Handler):
    """Send records from a worker process to the supervisor through the pipe."""

    def __init__(self, conn: Any, worker_id: str):
        super().__init__()
        self._conn = conn
        self._prefix = worker_logger_name(worker_id)

    def emit(self, record: logging.LogRecord) -> None:  # runs under self.lock
        try:
            d = record_to_dict(record)  # formatted, JSON-ready (hence picklable)
            if not d["name"].startswith(self._prefix):
                d["name"] = f"{self._prefix}.{d['name']}"
            self._conn.send(("log", d))
        except (OSError, EOFError, ValueError):
            pass  # the supervisor is gone; nowhere left to report to
        except Exception:
            self.handleError(record)


def _watch_parent(conn: Any, stop_event: threading.Event) -> None:
    """Child-side thread: set ``stop_event`` on ``("stop",)`` or a closed pipe."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            stop_event.set()
            return
        if msg and msg[0] == "stop":
            stop_event.set()
            return


def process_main(payload: dict[str, Any], conn: Any) -> None:
    """Entry point of a process worker (runs in the spawned interpreter).

    ``payload`` holds ``id``, ``name``, ``target``, ``search_path``, ``rings``
    (stream -> ring name), ``kwargs``, ``log_level`` and ``attach`` (a
    picklable callable ``ring_name -> view``).
    """
    worker_id = payload["id"]
    handler = _PipeLogHandler(conn, worker_id)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(payload.get("log_level", logging.INFO))
    logger = logging.getLogger(worker_logger_name(worker_id))
    stop_event = threading.Event()
    watcher = threading.Thread(
        target=_watch_parent, args=(conn, stop_event), name="dpshm-stop-watch", daemon=True
    )
    watcher.start()
    views: dict[str, Any] = {}
    ctx = None
    code = 0
    try:
        func = load_target(payload["target"], payload.get("search_path"))
        views = attach_all(payload["rings"], payload["attach"])
        ctx = WorkerContext(
            id=worker_id,
            name=payload["name"],
            streams=views,
            stop_event=stop_event,
            logger=logger,
            kwargs=dict(payload["kwargs"]),
            namespace=payload.get("namespace"),
            source_id=str(payload.get("source_id", "")),
        )
        conn.send(("started", None))
        func(ctx)
    except SystemExit as exc:  # sys.exit(n) in the target: the exit code says it all
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # report everything else with its traceback
        code = 1
        tb = traceback.format_exc()
        logger.error("worker %s failed:\n%s", worker_id, tb.rstrip())
        with contextlib.suppress(OSError, EOFError, ValueError):
            conn.send(("error", tb))
    finally:
        if ctx is not None:
            ctx.close()
        else:
            close_all(views, logger)
        root.removeHandler(handler)
    if code:
        sys.exit(code)


# -- parent side --------------------------------------------------------------------


def describe_exit(code: int | None) -> str:
    """``exited with code 3`` / ``was killed by signal SIGKILL`` / unknown."""
    if code is None:
        return "exited with an unknown exit code"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class ProcessHandle:
    """The supervisor's end of one process worker: process, pipe and tree.

    Only the manager's monitor thread calls :meth:`drain` and :meth:`reap`
    (it waits on :meth:`waitables`); any thread may call :meth:`request_stop`
    and :meth:`signal_tree`.

    Parameters
    ----------
    mp_context : multiprocessing context
        The spawn context.
    payload : dict
        What :func:`process_main` needs (see there).
    """

    def __init__(self, mp_context: Any, payload: dict[str, Any]):
        parent, child = mp_context.Pipe(duplex=True)
        self.proc = mp_context.Process(
            target=process_main,
            args=(payload, child),
            name=f"dpshm-worker-{payload['id']}",
            daemon=True,
        )
        try:
            self.proc.start()
        except BaseException:
            parent.close()
            child.close()
            raise
        child.close()
        self.pid: int = self.proc.pid
        self.conn = parent
        self.conn_open = True
        self.started = False
        self.traceback: str | None = None
        self._conn_lock = threading.Lock()

    @property
    def sentinel(self) -> int:
        """The process sentinel (ready when the worker process has exited)."""
        return self.proc.sentinel

    def waitables(self) -> list[Any]:
        """Objects for ``multiprocessing.connection.wait``: pipe (while open), sentinel."""
        return [self.conn, self.sentinel] if self.conn_open else [self.sentinel]

    def request_stop(self) -> None:
        """Ask the worker to stop (sets its ``ctx.stop_event``)."""
        with self._conn_lock, contextlib.suppress(OSError, EOFError, ValueError):
            if self.conn_open:
                self.conn.send(("stop",))

    def drain(
        self,
        on_record: Callable[[logging.LogRecord], None],
        on_started: Callable[[], None] | None = None,
    ) -> None:
        """Handle every message waiting on the pipe, in order; close it at end of file."""
        try:
            while self.conn_open and self.conn.poll():
                kind, data = self.conn.recv()
                if kind == "log":
                    on_record(dict_to_record(data))
                elif kind == "error":
                    self.traceback = data
                elif kind == "started":
                    self.started = True
                    if on_started is not None:
                        on_started()
        except (EOFError, OSError):
            self._close_conn()

    def reap(self, on_record: Callable[[logging.LogRecord], None]) -> int | None:
        """After the sentinel fired: read what is left, reap, return the exit code."""
        self.drain(on_record)  # records sent just before the exit; "started" is moot now
        self.proc.join(1.0)  # the sentinel closes a moment before the child is reapable
        self._close_conn()
        return self.proc.exitcode

    def _close_conn(self) -> None:
        with self._conn_lock:
            if self.conn_open:
                self.conn_open = False
                self.conn.close()

    def signal_tree(self, sig: int, grace_s: float) -> list[psutil.Process]:
        """Send ``sig`` to the worker and its descendants; return those still alive.

        Waits up to ``grace_s`` for the descendants.

        The worker itself is reaped by the monitor (through multiprocessing),
        never by psutil: a ``waitpid`` by psutil would leave multiprocessing
        without the exit code and with a stale pid.
        """
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
        _gone, alive = psutil.wait_procs(tree[1:], timeout=grace_s)
        return alive
