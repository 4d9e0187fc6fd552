"""What the command server started, and whom its callbacks go to.

:class:`WorkBook` is a base of :class:`~dpshm.dareplane.server.DefaultServer`
(its attributes are set there): the threads and processes that handlers
returned (stopped on ``STOP``), the client each was started by, and
``current_conn``, the client a module's callbacks are written to.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from dpshm.dareplane._conn import CallbackSocket, Connection
from dpshm.dareplane.procs import stop_process_tree


class Handling(NamedTuple):
    """The connection whose command (or hook) the handler thread is running."""

    conn: Connection
    before: frozenset[int] | None  # idents of the threads alive when the handler started


class WorkBook:
    """Kept threads and processes, and the callback target (see the module docstring)."""

    # set by DefaultServer.__init__
    logger: logging.Logger
    threads: dict[str, tuple[threading.Thread, threading.Event]]
    processes: dict[str, subprocess.Popen]
    thread_stopper: Callable[..., Any] | None
    proc_stopper: Callable[..., Any] | None
    thread_join_timeout_s: float
    process_grace_s: float
    _book_lock: threading.Lock
    _conns: dict[int, Connection]
    _dispatcher_thread: threading.Thread | None
    _handling: Handling | None
    _work_conn: Connection | None
    _thread_conn: dict[threading.Thread, Connection]

    # -- the callback target ---------------------------------------------------
    @property
    def current_conn(self) -> CallbackSocket | None:
        """The client to write callbacks to, as a socket-like object (``sendall``).

        Which client depends on the calling thread: in a handler (and in the
        connection hooks), the client whose command is being handled; in a
        thread that a handler started (returned as ``(thread, event)``, or
        started while the handler ran), the client whose command started it;
        anywhere else, the client whose command last started work (a handler
        that returned a thread, a process or an ``int``; built-ins and
        handlers that only reply a ``str``/``bytes`` never change it), or
        before any such command the longest-connected client. ``None`` when
        there is no client at all. Writing to a client that has disconnected
        drops the bytes and logs it once; it never raises.
        """
        conn = self._conn_for(threading.current_thread())
        return None if conn is None else conn.handle

    @current_conn.setter
    def current_conn(self, value: Any) -> None:
        # the original's field: assigning a connection's socket makes it the callback target
        if value is None:
            self._work_conn = None
            return
        for conn in list(self._conns.values()):
            if value is conn.sock or value is conn.handle:
                self._work_conn = conn
                return
        raise ValueError(
            f"current_conn can only be set to None or a connected client's socket, got {value!r}"
        )

    def _conn_for(self, thread: threading.Thread) -> Connection | None:
        h = self._handling
        if h is not None and thread is self._dispatcher_thread:
            return h.conn
        conn = self._thread_conn.get(thread)
        if conn is not None:
            return conn
        if h is not None and h.before is not None and thread.ident not in h.before:
            return h.conn  # a thread the running handler has just started
        return self._callback_target()

    def _callback_target(self) -> Connection | None:
        if self._work_conn is not None:
            return self._work_conn
        conns = [c for c in list(self._conns.values()) if c.close_reason is None]
        return min(conns, key=lambda c: c.id) if conns else None

    def _protected(self) -> set[Connection]:
        """Connections never evicted at the limit: those that started work still running."""
        keep = {c for th, c in list(self._thread_conn.items()) if th.is_alive()}
        if self._work_conn is not None:
            keep.add(self._work_conn)
        return keep

    # -- bookkeeping -------------------------------------------------------
    def close_threads(self) -> None:
        """Set every kept thread's stop event and join it (bounded)."""
        with self._book_lock:
            items = list(self.threads.items())
            self.threads.clear()
        for _key, (_th, ev) in items:
            ev.set()
        if self.thread_stopper is not None:
            for key, (th, _ev) in items:
                if th is not threading.current_thread():
                    self._custom_stop(self.thread_stopper, th, key)
        else:
            deadline = time.monotonic() + self.thread_join_timeout_s
            for key, (th, _ev) in items:
                if th is threading.current_thread() or th.ident is None:
                    continue
                th.join(max(0.0, deadline - time.monotonic()))
                if th.is_alive():
                    self.logger.warning(
                        "thread %s (%s) ignored its stop event for %.1f s; left running as "
                        "daemon=%s",
                        th.name,
                        key,
                        self.thread_join_timeout_s,
                        th.daemon,
                    )
        self._thread_conn = {th: c for th, c in list(self._thread_conn.items()) if th.is_alive()}

    def close_processes(self) -> None:
        """Stop every kept process with its whole tree (SIGTERM, grace, SIGKILL)."""
        with self._book_lock:
            items = list(self.processes.items())
            self.processes.clear()
        for key, proc in items:
            if self.proc_stopper is not None:
                self._custom_stop(self.proc_stopper, proc, key)
            else:
                stop_process_tree(proc, grace_s=self.process_grace_s)

    def _custom_stop(self, stopper: Callable[..., Any], what: Any, key: str) -> None:
        try:
            stopper(what, logger=self.logger)
        except Exception:
            self.logger.exception("stopper %r failed on %s", stopper, key)
