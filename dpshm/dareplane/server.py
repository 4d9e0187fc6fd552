r"""Dareplane-compatible TCP command server (``DefaultServer``, ``DefaultCallbackServer``).

Wire protocol: on accept the server sends ``Connected to <name>\\n``; commands
are framed as described in :mod:`dpshm.dareplane.framing` (``;`` always, a
newline outside an open JSON value, and a pause only where no further byte can
change the command). Built-ins ``STOP``, ``CLOSE``, ``GET_PCOMMS`` (reply:
names joined by ``|``, no terminator) and ``UP`` (reply ``1``) answer
byte-identically to dareplane-utils 0.0.24. Problems are answered with one line
:func:`~dpshm.dareplane.protocol.error_line` unless ``error_replies=False``.

One I/O thread (the one calling :meth:`DefaultServer.start_listening`) serves
every connection with a selector (:mod:`dpshm.dareplane._ioloop`); handlers
run one at a time in one handler thread, fair between connections
(:mod:`dpshm.dareplane._dispatcher`), so module code need not be thread-safe.
A connection whose first bytes are another protocol's (an HTTP request, TLS,
SSH) is closed before anything is executed.

``DefaultCallbackServer`` lives in :mod:`dpshm.dareplane.callback_server`.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from dpshm.dareplane import threadwatch
from dpshm.dareplane._conn import (
    COMMANDED,
    ERROR_BURST,
    ERROR_RATE,
    Connection,
)
from dpshm.dareplane._ioloop import _ACCEPTED, _CLOSED, IOLoop
from dpshm.dareplane._ratelog import RateLimitedLog
from dpshm.dareplane._work import Handling, WorkBook
from dpshm.dareplane.framing import MAX_MESSAGE_BYTES, FramingError
from dpshm.dareplane.logs import protect, server_logger
from dpshm.dareplane.protocol import error_line, parse_command
from dpshm.errors import ProtocolError

__all__ = ["BUILT_IN_PCOMMS", "DefaultServer", "is_loopback"]

BUILT_IN_PCOMMS = ["STOP", "CLOSE", "GET_PCOMMS", "UP"]
_POLL_S = 0.1
MIN_BACKLOG = 128
#: What ``delimiter`` may be (each of them always ends a command anyway).
DELIMITERS = (b";", b"\n", b"\r\n")
# methods of the original's server that this one does not call: a subclass that
# overrides one would silently lose its behaviour, so defining one is an error
_NOT_CALLED = (
    "handle_msg",
    "default_msg_interpretation",
    "msg_interpretation",
    "process_connection",
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``).

    Parameters
    ----------
    host : str
        A host name or IP address, as given to ``bind``.

    Returns
    -------
    bool
        ``False`` for ``0.0.0.0``, ``""`` and every other address.
    """
    if host.strip().lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


class DefaultServer(WorkBook, IOLoop):
    r"""TCP command server of a Dareplane module.

    Subclasses may override :meth:`on_connection_accepted` and
    :meth:`on_connection_closed` (as with dareplane-utils). Overriding the
    original's ``handle_msg``, ``default_msg_interpretation``,
    ``msg_interpretation`` or ``process_connection`` is a ``TypeError`` when
    the class is defined: this server does not call them, so the override
    would be silently ignored (see docs/migration.md).

    Parameters
    ----------
    port : int
        TCP port; 0 picks a free one (read it back from ``port`` after
        :meth:`init_server`).
    ip : str
        Address to bind. Loopback by default (the original bound ``0.0.0.0``).
    nlisten : int
        Listen backlog; at least ``MIN_BACKLOG`` (128) is used, so a burst of
        connections cannot fill the kernel's queue and delay a client's
        connect by its one-second SYN retry.
    name : str
        Name sent in the ``Connected to <name>`` banner.
    pcommand_map : dict[str, Callable] | None
        Primary command -> handler. A handler is called with the positional and
        JSON keyword arguments of the command and returns an ``int``, a started
        ``(threading.Thread, threading.Event)`` pair, a ``subprocess.Popen``
        (kept and stopped on ``STOP``), or a ``str``/``bytes`` reply that is
        sent to the client that issued the command.
    logger : logging.Logger | None
        Logger of the server. If None, ``dpshm.dareplane.server``, which
        forwards to the Dareplane log server on 127.0.0.1:9020 as the
        original's default does (:func:`~dpshm.dareplane.logs.server_logger`).
    token : str | None
        If set, each connection must first send ``AUTH|<token>`` (reply
        ``OK\n``); every other command before that is refused with ``ERROR``.
    error_replies : bool
        Answer problems with an ``ERROR ...`` line (set False for strict clients).
    max_clients : int
        Simultaneous connections. When a new client arrives at the limit, the
        idlest connection that may go is closed with an ``ERROR`` line (first
        those that never sent a command, then those that sent only
        built-ins, then the others; least recently active first); a
        connection whose command started work that is still running, the
        current callback target, one with a command in progress and (with a
        ``token``) an authenticated one are never closed this way. If none
        may go, the new client gets ``ERROR too many clients`` and is
        closed. Either is logged (at a bounded rate). No idle timeout
        otherwise: a control room may stay connected and silent for days.
    idle_dispatch_s, stale_dispatch_s : float
        Unterminated commands (see docs/server.md, "Framing rule"):
        executed after ``idle_dispatch_s`` without further bytes when nothing
        that may follow can change them; a pending command that is still
        incomplete after ``stale_dispatch_s`` without further bytes is
        discarded with an ``ERROR`` reply.
    thread_join_timeout_s : float
        How long ``STOP`` waits for each handler thread after setting its event.
    process_grace_s : float
        SIGTERM grace period of each process tree on ``STOP``.
    max_message_bytes : int
        Largest pending (unterminated) command of one connection; beyond it
        the command is discarded with an ``ERROR`` reply (and so is deeper
        JSON nesting than 64 levels).
    max_output_bytes : int
        Largest amount of replies and callbacks waiting for one client that
        does not read them; beyond it the client is disconnected.
    accept_timeout_s : float
        Longest sleep of the I/O thread (bounds how fast a set ``stop_event``
        is noticed; ``shutdown`` and ``CLOSE`` wake it at once).
    send_timeout_s : float
        A client that does not read its pending replies for this long is
        disconnected, so it cannot hold memory.
    thread_stopper : Callable | None
        dareplane-utils compatibility: called as ``thread_stopper(thread,
        logger=logger)`` for each kept thread on ``STOP`` (after its event is
        set) instead of the bounded join.
    proc_stopper : Callable | None
        dareplane-utils compatibility: called as ``proc_stopper(popen,
        logger=logger)`` for each kept process on ``STOP`` instead of
        :func:`~dpshm.dareplane.procs.stop_process_tree`.
    msg_interpreter : Callable | None
        dareplane-utils compatibility: called as ``msg_interpreter(msg,
        pcommand_map, logger=logger)`` with the command's bytes (terminator
        removed) for every ``pcommand_map`` command, instead of dpshm's parser;
        its return value is kept as a handler's would be.
    delimiter : bytes
        dareplane-utils compatibility: ``b";"`` (the default), ``b"\n"`` or
        ``b"\r\n"``; all three end a command anyway. Anything else is a
        ``ValueError``.
    """

    #: Commands logged at DEBUG instead of INFO when received (read-only queries
    #: that a monitor such as ``dpshm view`` polls).
    quiet_pcomms: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found = [m for m in _NOT_CALLED if m in cls.__dict__]
        if found:
            raise TypeError(
                f"{cls.__qualname__} overrides {', '.join(found)} of dareplane-utils' "
                "DefaultServer, which dpshm's DefaultServer never calls; put the logic in "
                "pcommand_map handlers, pass msg_interpreter=..., or override "
                "on_connection_accepted/on_connection_closed (docs/migration.md)"
            )

    def __init__(
        self,
        port: int = 8080,
        ip: str = "127.0.0.1",
        nlisten: int = 10,
        name: str = "default_server",
        pcommand_map: dict[str, Callable[..., Any]] | None = None,
        logger: logging.Logger | None = None,
        *,
        token: str | None = None,
        error_replies: bool = True,
        max_clients: int = 64,
        idle_dispatch_s: float = 0.005,
        stale_dispatch_s: float = 0.5,
        thread_join_timeout_s: float = 5.0,
        process_grace_s: float = 2.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_output_bytes: int = 4 << 20,
        accept_timeout_s: float = _POLL_S,
        send_timeout_s: float = 2.0,
        thread_stopper: Callable[..., Any] | None = None,
        proc_stopper: Callable[..., Any] | None = None,
        msg_interpreter: Callable[..., Any] | None = None,
        delimiter: bytes = b";",
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, got {port!r}")
        for what, value, low in (
            ("max_clients", max_clients, 1),
            ("max_message_bytes", max_message_bytes, 64),
            ("max_output_bytes", max_output_bytes, 1024),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{what} must be an int >= {low}, got {value!r}")
        for what, value in (
            ("idle_dispatch_s", idle_dispatch_s),
            ("stale_dispatch_s", stale_dispatch_s),
            ("send_timeout_s", send_timeout_s),
            ("accept_timeout_s", accept_timeout_s),
        ):
            if not 0 < value <= 3600:  # also refuses NaN
                raise ValueError(f"{what} must be in (0, 3600] seconds, got {value!r}")
        if token is not None and not (isinstance(token, str) and token and "|" not in token):
            raise ValueError("token must be a non-empty str without '|' (or None for no auth)")
        if delimiter not in DELIMITERS:
            raise ValueError(
                f"delimiter {delimiter!r} is not supported: commands end on ';', '\\n' or "
                "'\\r\\n' (all three always); drop the delimiter argument"
            )
        for what, f in (
            ("thread_stopper", thread_stopper),
            ("proc_stopper", proc_stopper),
            ("msg_interpreter", msg_interpreter),
        ):
            if f is not None and not callable(f):
                raise TypeError(f"{what} must be callable or None, got {type(f).__name__}")
        self.port = port
        self.ip = ip
        self.nlisten = nlisten
        self.name = name
        # the caller's dict itself (as the original): later additions are seen
        self.pcommand_map: dict[str, Callable[..., Any]] = (
            pcommand_map if pcommand_map is not None else {}
        )
        # the original's default logger forwards to the log server: so does this one
        self.logger = protect(logger) if logger is not None else server_logger(__name__)
        self.threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.server_socket: socket.socket | None = None
        self.is_listening = False
        self.listen_stop_event = threading.Event()
        self.token = token
        self.error_replies = error_replies
        self.max_clients = max_clients
        self.idle_dispatch_s = idle_dispatch_s
        self.stale_dispatch_s = stale_dispatch_s
        self.thread_join_timeout_s = thread_join_timeout_s
        self.process_grace_s = process_grace_s
        self.max_message_bytes = max_message_bytes
        self.max_output_bytes = max_output_bytes
        self.accept_timeout_s = accept_timeout_s
        self.send_timeout_s = send_timeout_s
        self.thread_stopper = thread_stopper
        self.proc_stopper = proc_stopper
        self.msg_interpreter = msg_interpreter
        self.delimiter = delimiter
        self._builtins = BUILT_IN_PCOMMS
        self._counter = itertools.count()
        self._book_lock = threading.Lock()
        self._conns: dict[int, Connection] = {}
        self._loop_done = threading.Event()
        self._loop_done.set()
        self._dispatcher_thread: threading.Thread | None = None
        self._handling: Handling | None = None
        self._work_conn: Connection | None = None  # whose command last started work
        self._thread_conn: dict[threading.Thread, Connection] = {}
        self._cmd_log = RateLimitedLog(self.logger, rate=20.0, burst=100)
        self._junk_log = RateLimitedLog(self.logger, rate=1.0, burst=10)

    # -- lifecycle ---------------------------------------------------------
    def init_server(self, stop_event: threading.Event | None = None) -> None:
        """Bind and listen.

        Parameters
        ----------
        stop_event : threading.Event | None
            Event that stops :meth:`start_listening` when set (a fresh one if None).
        """
        if self.server_socket is not None:
            raise RuntimeError(f"server {self.name!r} is already initialised on port {self.port}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.ip, self.port))
            sock.listen(max(self.nlisten, MIN_BACKLOG))
        except OSError as err:
            sock.close()
            raise OSError(
                err.errno,
                f"cannot listen on {self.ip}:{self.port} for {self.name!r}: {err.strerror}; "
                "choose another --port or stop the process using it",
            ) from None
        self.server_socket = sock
        self.port = sock.getsockname()[1]
        self.listen_stop_event = stop_event if stop_event is not None else threading.Event()

    def start_listening(self) -> None:
        """Accept clients and serve them until ``CLOSE`` or :meth:`shutdown`.

        Blocks the calling thread (the server's I/O thread). On return the
        listening socket and all client connections are closed and every
        thread/process started by a handler is stopped.
        """
        if self.server_socket is None:
            raise RuntimeError("call init_server() before start_listening()")
        self._loop_done.clear()
        self.is_listening = True
        threadwatch.install()  # before any handler starts a thread
        try:
            self._io_setup()
            self._dispatcher_thread = self._dispatcher.thread
            self._on_listen_start()
            self._io_loop()
        finally:
            self.is_listening = False
            try:
                self._io_teardown(dispatcher_timeout=self.thread_join_timeout_s)
                self._on_listen_stop()
                self.close_threads()
                self.close_processes()
            finally:
                self._loop_done.set()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop listening, close all connections, stop threads and processes.

        Returns within about ``timeout`` seconds plus the stop time of handler
        threads and processes; the port is free afterwards. Idempotent.
        """
        self.logger.info("Shutting down %s", self.name)
        self.listen_stop_event.set()
        self._wake()
        in_handler = threading.current_thread() is self._dispatcher_thread
        if not in_handler and not self._loop_done.wait(timeout):
            self.logger.warning("listen loop of %s did not end within %.1f s", self.name, timeout)
        if self._loop_done.is_set() and self.server_socket is not None:
            sock, self.server_socket = self.server_socket, None  # initialised, never listened
            sock.close()
        self.close_threads()
        self.close_processes()

    close = shutdown

    def __enter__(self) -> DefaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- hooks for subclasses ---------------------------------------------
    def _on_listen_start(self) -> None:
        """Called when the accept loop starts."""

    def _on_listen_stop(self) -> None:
        """Called when the accept loop ends, before threads/processes are stopped."""

    def on_connection_accepted(self) -> None:
        """Called for each new client before its banner, in the handler thread.

        ``self.current_conn`` is the client's socket meanwhile (handlers and
        these hooks run one at a time). Override in a subclass; the default
        does nothing.
        """

    def on_connection_closed(self) -> None:
        """Called when a client's connection ended.

        Runs in the handler thread, with ``self.current_conn`` set to its
        (closed) socket. Override in a subclass; the default does nothing.
        """

    def _overridden(self, hook: str) -> bool:
        return getattr(DefaultServer, hook) is not getattr(type(self), hook)

    # -- the handler thread ------------------------------------------------
    def _run_item(self, conn: Connection, item: Any) -> None:
        if item in (_ACCEPTED, _CLOSED):
            self._handling = Handling(conn, None)
            try:
                getattr(self, item)()
            except Exception:
                self.logger.exception("%s of %s failed", item, self.name)
            finally:
                self._handling = None
            if item == _ACCEPTED:
                conn.send(f"Connected to {self.name}\n".encode())
        elif isinstance(item, FramingError):
            self._error(conn, item.text)
        else:
            self._dispatch(conn, item)

    def _error(self, conn: Connection, text: str) -> None:
        self._junk_log.log(logging.WARNING, "error", "%s: %s", self.name, text)
        if not conn.spend_error():
            self._junk_log.log(
                logging.WARNING,
                "junk",
                "%s closed the connection of %s: more than %d refused commands at "
                "%d per second (a junk source)",
                self.name,
                conn.addr,
                ERROR_BURST,
                ERROR_RATE,
            )
            text = (
                f"too many refused commands (more than {ERROR_BURST:.0f} at once or "
                f"{ERROR_RATE:.0f} per second); connection closed"
            )
            conn.discard_queue = True
            self._dispatcher.discard(conn, keep=lambda item: item == _CLOSED)
            conn.send(error_line(text).encode())
            conn.ask_close("junk source")
        elif self.error_replies:
            conn.send(error_line(text).encode("utf-8", "backslashreplace"))

    def _dispatch(self, conn: Connection, raw: bytes) -> None:
        first = raw.split(b"|", 1)[0].strip()  # the command's name field
        if first == b"AUTH":
            self._authenticate(conn, raw)
            return
        try:
            cmd = parse_command(raw)
            name = cmd.name
        except ProtocolError as err:
            if self.msg_interpreter is None:
                self._error(conn, str(err))
                return
            # the module's interpreter reads its own payload format: only the name counts here
            cmd, name = None, first.decode("utf-8", "replace")
        if not name:
            self._error(conn, f"empty command name in {raw[:80]!r}")
            return
        if self.token is not None and not conn.authenticated:
            self._error(conn, f"not authenticated; send AUTH|<token> before {name!r}")
            return
        if name != "UP":  # read-only queries a monitor polls stay out of the INFO log
            quiet = name in self.quiet_pcomms
            level = logging.DEBUG if quiet else logging.INFO
            self._cmd_log.log(level, f"received{quiet}", "Received: %r", raw)
        if name in BUILT_IN_PCOMMS:
            self._builtin(conn, name)
            return
        func = self.pcommand_map.get(name)
        if func is None:
            known = "|".join([*self.pcommand_map, *BUILT_IN_PCOMMS])
            self._error(conn, f"unknown PCOMM {name!r}; known: {known}")
            return
        conn.activity = COMMANDED
        before = frozenset(t.ident for t in threading.enumerate())
        self._handling = Handling(conn, before)
        try:
            if self.msg_interpreter is not None:
                ret = self.msg_interpreter(raw, self.pcommand_map, logger=self.logger)
            else:
                ret = func(*cmd.args, **cmd.kwargs)  # type: ignore[union-attr]
        except Exception as err:
            self._junk_log.log(
                logging.ERROR, "handler", "handler of %r failed", name, exc_info=True
            )
            self._error(conn, f"{name} raised {type(err).__name__}: {err}")
            return
        finally:
            self._handling = None
        if self._keep(conn, name, raw, ret):
            # threads the handler started, returned or not, keep reporting to this client
            for t in threading.enumerate():
                if t.ident not in before:
                    self._thread_conn[t] = conn
            if len(self._thread_conn) > 256:  # forget ended threads now and then
                self._thread_conn = {t: c for t, c in self._thread_conn.items() if t.is_alive()}

    def _authenticate(self, conn: Connection, raw: bytes) -> None:
        if self.token is None:
            self._error(conn, "AUTH sent but this server has no token; drop the AUTH command")
            return
        # AUTH|<token> parses as a (non-JSON) payload: take the raw text after '|'
        given = raw.decode("utf-8", "replace").partition("|")[2].strip()
        if hmac.compare_digest(given.encode(), str(self.token).encode()):
            conn.authenticated = True
            conn.send(b"OK\n")
        else:
            self._junk_log.log(
                logging.WARNING,
                "auth",
                "%s: wrong token from %s (not logged); connection closed",
                self.name,
                conn.addr,
            )
            conn.send(error_line("authentication failed: wrong token; connection closed").encode())
            conn.ask_close("wrong token")

    def _builtin(self, conn: Connection, name: str) -> None:
        if name == "STOP":
            self.close_threads()
            self.close_processes()
        elif name == "CLOSE":
            self.listen_stop_event.set()
            self._wake()
        elif name == "GET_PCOMMS":
            conn.send("|".join([*self.pcommand_map, *BUILT_IN_PCOMMS]).encode())
        elif name == "UP":
            conn.send(b"1")

    def _keep(self, conn: Connection, name: str, raw: bytes, ret: Any) -> bool:
        """Send or keep what a handler returned; whether it started work (re-targets)."""
        key = f"{time.time_ns()}_{next(self._counter)}_{raw!r}"
        if isinstance(ret, (str, bytes)):
            conn.send(ret.encode() if isinstance(ret, str) else ret)
            return False  # a reply only: the callback target stays
        if isinstance(ret, int):
            self.logger.debug("%r returned %r", raw, ret)
        elif (
            isinstance(ret, tuple)
            and len(ret) == 2
            and isinstance(ret[0], threading.Thread)
            and isinstance(ret[1], threading.Event)
        ):
            with self._book_lock:
                self.threads[key] = ret
            self._thread_conn[ret[0]] = conn
            threadwatch.watch(ret[0], self.logger)  # a death is logged at ERROR
        elif isinstance(ret, subprocess.Popen):
            with self._book_lock:
                self.processes[key] = ret
        else:
            self._error(
                conn,
                f"handler of {name!r} returned {type(ret).__name__}; return an int, a "
                "(Thread, Event) pair, a subprocess.Popen or a str/bytes reply",
            )
            return False
        self._work_conn = conn
        return True
