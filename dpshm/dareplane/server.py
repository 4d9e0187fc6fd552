r"""Dareplane-compatible TCP command server (``DefaultServer``, ``DefaultCallbackServer``).

Wire protocol: on accept the server sends ``Connected to <name>\n``; commands
are framed as described in :mod:`dpshm.dareplane.protocol` (``;``, ``\n``, ``\r\n`` or
a short idle gap end a command). Built-ins ``STOP``, ``CLOSE``, ``GET_PCOMMS``
(reply: names joined by ``|``, no terminator) and ``UP`` (reply ``1``) answer
byte-identically to dareplane-utils 0.0.24. Problems are answered with one line
``ERROR <what went wrong>\n`` unless ``error_replies=False``.

``DefaultCallbackServer`` lives in :mod:`dpshm.dareplane.callback_server`.

Each connection is served by its own thread (at most ``max_clients``);
handlers run one at a time under a lock, as with the original single-client
server, so module code need not be thread-safe.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import itertools
import logging
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from dpshm.dareplane.procs import stop_process_tree
from dpshm.dareplane.protocol import (
    COMPLETE_AFTER_IDLE,
    COMPLETE_NOW,
    INCOMPLETE,
    MAX_MESSAGE_BYTES,
    TERMINATORS,
    CommandFramer,
    completeness,
    parse_command,
)
from dpshm.errors import ProtocolError

__all__ = ["BUILT_IN_PCOMMS", "DefaultServer", "is_loopback"]

BUILT_IN_PCOMMS = ["STOP", "CLOSE", "GET_PCOMMS", "UP"]
_POLL_S = 0.1
_IDLE_WAKE_S = 1.0
_UP_RAW = frozenset({b"UP", b"UP|"})
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


class _Connection:
    """One accepted client: socket, framing state and a send lock."""

    def __init__(self, sock: socket.socket, addr: Any, max_bytes: int) -> None:
        self.sock = sock
        self.addr = addr
        self.framer = CommandFramer(max_bytes)
        self.send_lock = threading.Lock()
        self.authenticated = False
        self.closed = False
        self.thread: threading.Thread | None = None

    def send(self, data: bytes) -> bool:
        """Send all of ``data``; ``False`` (and the connection closed) on failure."""
        with self.send_lock:
            if self.closed:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                self.close()
                return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


class DefaultServer:
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
        Listen backlog.
    name : str
        Name sent in the ``Connected to <name>`` banner.
    pcommand_map : dict[str, Callable] | None
        Primary command -> handler. A handler is called with the positional and
        JSON keyword arguments of the command and returns an ``int``, a started
        ``(threading.Thread, threading.Event)`` pair, a ``subprocess.Popen``
        (kept and stopped on ``STOP``), or a ``str``/``bytes`` reply that is
        sent to the client that issued the command.
    logger : logging.Logger | None
        Logger of the server; ``logging.getLogger("dpshm.dareplane.server")`` if None.
    token : str | None
        If set, each connection must first send ``AUTH|<token>`` (reply
        ``OK\n``); every other command before that is refused with ``ERROR``.
    error_replies : bool
        Answer problems with an ``ERROR ...`` line (set False for strict clients).
    max_clients : int
        Simultaneous connections; further clients get ``ERROR`` and are closed.
    idle_dispatch_s, stale_dispatch_s : float
        Unterminated-command rule, see docs/server.md.
    thread_join_timeout_s : float
        How long ``STOP`` waits for each handler thread after setting its event.
    process_grace_s : float
        SIGTERM grace period of each process tree on ``STOP``.
    max_message_bytes : int
        Largest unterminated message before it is discarded with ``ERROR``.
    accept_timeout_s : float
        Poll interval of the accept loop (bounds how fast ``shutdown`` returns).
    send_timeout_s : float
        A client that does not read a reply for this long is disconnected, so
        it cannot stall the server.
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
        max_clients: int = 16,
        idle_dispatch_s: float = 0.005,
        stale_dispatch_s: float = 0.5,
        thread_join_timeout_s: float = 5.0,
        process_grace_s: float = 2.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        accept_timeout_s: float = _POLL_S,
        send_timeout_s: float = 2.0,
        thread_stopper: Callable[..., Any] | None = None,
        proc_stopper: Callable[..., Any] | None = None,
        msg_interpreter: Callable[..., Any] | None = None,
        delimiter: bytes = b";",
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, got {port!r}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients!r}")
        if token is not None and not (isinstance(token, str) and token and "|" not in token):
            raise ValueError("token must be a non-empty str without '|' (or None for no auth)")
        if delimiter not in TERMINATORS:
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
        self.logger = logger if logger is not None else logging.getLogger(__name__)
        self.threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.current_conn: socket.socket | None = None
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
        self.accept_timeout_s = accept_timeout_s
        self.send_timeout_s = send_timeout_s
        self.thread_stopper = thread_stopper
        self.proc_stopper = proc_stopper
        self.msg_interpreter = msg_interpreter
        self.delimiter = delimiter
        self._counter = itertools.count()
        self._dispatch_lock = threading.RLock()
        self._book_lock = threading.Lock()
        self._conns: set[_Connection] = set()
        self._conns_lock = threading.Lock()
        self._loop_done = threading.Event()
        self._loop_done.set()

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
            sock.listen(self.nlisten)
        except OSError as err:
            sock.close()
            raise OSError(
                err.errno,
                f"cannot listen on {self.ip}:{self.port} for {self.name!r}: {err.strerror}; "
                "choose another --port or stop the process using it",
            ) from None
        sock.settimeout(self.accept_timeout_s)
        self.server_socket = sock
        self.port = sock.getsockname()[1]
        self.listen_stop_event = stop_event if stop_event is not None else threading.Event()

    def start_listening(self) -> None:
        """Accept clients and serve them until ``CLOSE`` or :meth:`shutdown`.

        Blocks the calling thread. On return the listening socket and all client
        connections are closed and every thread/process started by a handler is
        stopped.
        """
        if self.server_socket is None:
            raise RuntimeError("call init_server() before start_listening()")
        self._loop_done.clear()
        self.is_listening = True
        self._on_listen_start()
        try:
            while not self.listen_stop_event.is_set():
                try:
                    sock, addr = self.server_socket.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self.listen_stop_event.is_set() or self.server_socket is None:
                        break
                    raise
                self._accept(sock, addr)
        finally:
            self.is_listening = False
            self._close_listening_socket()
            self._close_connections()
            self._on_listen_stop()
            self.close_threads()
            self.close_processes()
            self._loop_done.set()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop listening, close all connections, stop threads and processes.

        Returns within about ``timeout`` seconds plus the stop time of handler
        threads and processes; the port is free afterwards. Idempotent.
        """
        self.logger.info("Shutting down %s", self.name)
        self.listen_stop_event.set()
        loop_thread_is_me = False
        with self._conns_lock:
            loop_thread_is_me = any(c.thread is threading.current_thread() for c in self._conns)
        if not loop_thread_is_me and not self._loop_done.wait(timeout):
            self.logger.warning("listen loop of %s did not end within %.1f s", self.name, timeout)
        self._close_listening_socket()
        self._close_connections()
        self.close_threads()
        self.close_processes()

    close = shutdown

    def __enter__(self) -> DefaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _close_listening_socket(self) -> None:
        sock, self.server_socket = self.server_socket, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            c.close()
        me = threading.current_thread()
        deadline = time.monotonic() + 2.0
        for c in conns:
            if c.thread is not None and c.thread is not me:
                c.thread.join(max(0.0, deadline - time.monotonic()))

    # -- hooks for subclasses ---------------------------------------------
    def _on_listen_start(self) -> None:
        """Called when the accept loop starts."""

    def _on_listen_stop(self) -> None:
        """Called when the accept loop ends, before threads/processes are stopped."""

    def on_connection_accepted(self) -> None:
        """Called for each new client before its banner, in that client's thread.

        ``self.current_conn`` is the client's socket meanwhile (handlers and
        these hooks run one at a time). Override in a subclass; the default
        does nothing.
        """

    def on_connection_closed(self) -> None:
        """Called when a client's connection ended.

        Runs in that client's thread, with ``self.current_conn`` set to its
        (closed) socket. Override in a subclass; the default does nothing.
        """

    def _hook(self, conn: _Connection, hook: Callable[[], None]) -> None:
        if getattr(DefaultServer, hook.__name__) is getattr(type(self), hook.__name__):
            return  # not overridden: no need to queue behind a running handler
        with self._dispatch_lock:
            self.current_conn = conn.sock
            try:
                hook()
            except Exception:
                self.logger.exception("%s of %s failed", hook.__name__, self.name)

    # -- connections -------------------------------------------------------
    def _accept(self, sock: socket.socket, addr: Any) -> None:
        sock.settimeout(None)
        conn = _Connection(sock, addr, self.max_message_bytes)
        with self._conns_lock:
            full = len(self._conns) >= self.max_clients
            if not full:
                self._conns.add(conn)
        if full:
            self.logger.warning("refusing client %s: %d clients connected", addr, self.max_clients)
            conn.send(
                f"ERROR too many clients ({self.max_clients} connected); close one or raise "
                "max_clients\n".encode()
            )
            conn.close()
            return
        conn.thread = threading.Thread(
            target=self._serve_connection, args=(conn,), name=f"dpshm-conn-{addr}", daemon=True
        )
        conn.thread.start()

    def _serve_connection(self, conn: _Connection) -> None:
        self.logger.info("client %s connected to %s", conn.addr, self.name)
        try:
            self._hook(conn, self.on_connection_accepted)
            if conn.send(f"Connected to {self.name}\n".encode()):
                self._read_loop(conn)
        except Exception:
            self.logger.exception("unexpected error serving %s; connection dropped", conn.addr)
        finally:
            conn.close()
            with self._conns_lock:
                self._conns.discard(conn)
            self._hook(conn, self.on_connection_closed)
            self.logger.info("client %s disconnected", conn.addr)

    def _completeness(self, rest: bytes) -> int:
        if rest.startswith(b"AUTH|"):
            return COMPLETE_AFTER_IDLE if self.token is not None else INCOMPLETE
        return completeness(rest, {*self.pcommand_map, *BUILT_IN_PCOMMS}, BUILT_IN_PCOMMS)

    def _read_loop(self, conn: _Connection) -> None:
        framer = conn.framer
        last_rx = time.monotonic()
        conn.sock.settimeout(self.send_timeout_s)  # bounds sendall to a client not reading
        with selectors.DefaultSelector() as sel:
            sel.register(conn.sock, selectors.EVENT_READ)
            while not self.listen_stop_event.is_set() and not conn.closed:
                # idle: wake every _IDLE_WAKE_S (close() wakes at once); a remainder: idle_s
                ready = sel.select(self.idle_dispatch_s if framer.pending else _IDLE_WAKE_S)
                if not ready:
                    if framer.pending:
                        self._idle_remainder(conn, time.monotonic() - last_rx)
                    continue
                try:
                    data = conn.sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    self._eof_remainder(conn)
                    return
                last_rx = time.monotonic()
                self._received(conn, data)

    def _idle_remainder(self, conn: _Connection, idle: float) -> None:
        rest = bytes(conn.framer.buffer).strip()
        if (
            idle >= self.idle_dispatch_s and self._completeness(rest) != INCOMPLETE
        ) or idle >= self.stale_dispatch_s:
            self._dispatch(conn, conn.framer.take_remainder())

    def _eof_remainder(self, conn: _Connection) -> None:
        if conn.framer.pending:
            rest = conn.framer.take_remainder()
            if self._completeness(rest) != INCOMPLETE:
                self._dispatch(conn, rest)
            else:
                self._error(conn, f"client disconnected mid-command; dropped {rest[:80]!r}")

    def _received(self, conn: _Connection, data: bytes) -> None:
        framer = conn.framer
        commands, oversized = framer.feed(data)
        for raw in commands:
            self._dispatch(conn, raw)
        if framer.pending and self._completeness(bytes(framer.buffer)) == COMPLETE_NOW:
            self._dispatch(conn, framer.take_remainder())
        if oversized:
            self._error(
                conn,
                f"message exceeds {self.max_message_bytes} bytes without a ';' or newline "
                "terminator; discarded up to the next terminator",
            )

    # -- dispatch ----------------------------------------------------------
    def _error(self, conn: _Connection, text: str) -> None:
        self.logger.warning("%s: %s", self.name, text)
        if self.error_replies:
            conn.send(f"ERROR {text}\n".encode("utf-8", "backslashreplace"))

    def _dispatch(self, conn: _Connection, raw: bytes) -> None:
        if raw in _UP_RAW and (self.token is None or conn.authenticated):
            conn.send(b"1")  # the health check: no parsing, no logging
            return
        first = raw.strip().split(b"|", 1)[0].strip()  # the command's name field
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
        if name != "UP":
            self.logger.info("Received: %r", raw)
        with self._dispatch_lock:
            self.current_conn = conn.sock
            if name in BUILT_IN_PCOMMS:
                self._builtin(conn, name)
                return
            func = self.pcommand_map.get(name)
            if func is None:
                known = "|".join([*self.pcommand_map, *BUILT_IN_PCOMMS])
                self._error(conn, f"unknown PCOMM {name!r}; known: {known}")
                return
            try:
                if self.msg_interpreter is not None:
                    ret = self.msg_interpreter(raw.strip(), self.pcommand_map, logger=self.logger)
                else:
                    assert cmd is not None
                    ret = func(*cmd.args, **cmd.kwargs)
            except Exception as err:
                self.logger.exception("handler of %r failed", name)
                self._error(conn, f"{name} raised {type(err).__name__}: {err}")
                return
        self._keep(conn, name, raw, ret)

    def _authenticate(self, conn: _Connection, raw: bytes) -> None:
        if self.token is None:
            self._error(conn, "AUTH sent but this server has no token; drop the AUTH command")
            return
        # AUTH|<token> parses as a (non-JSON) payload: take the raw text after '|'
        given = raw.decode("utf-8", "replace").strip().partition("|")[2].strip()
        if hmac.compare_digest(given.encode(), str(self.token).encode()):
            conn.authenticated = True
            conn.send(b"OK\n")
        else:
            self.logger.warning("%s: wrong token from %s; connection closed", self.name, conn.addr)
            conn.send(b"ERROR authentication failed: wrong token; connection closed\n")
            conn.close()

    def _builtin(self, conn: _Connection, name: str) -> None:
        if name == "STOP":
            self.close_threads()
            self.close_processes()
        elif name == "CLOSE":
            self.listen_stop_event.set()
        elif name == "GET_PCOMMS":
            conn.send("|".join([*self.pcommand_map, *BUILT_IN_PCOMMS]).encode())
        elif name == "UP":
            conn.send(b"1")

    def _keep(self, conn: _Connection, name: str, raw: bytes, ret: Any) -> None:
        key = f"{time.time_ns()}_{next(self._counter)}_{raw!r}"
        if isinstance(ret, (str, bytes)):
            conn.send(ret.encode() if isinstance(ret, str) else ret)
        elif isinstance(ret, int):
            self.logger.debug("%r returned %r", raw, ret)
        elif (
            isinstance(ret, tuple)
            and len(ret) == 2
            and isinstance(ret[0], threading.Thread)
            and isinstance(ret[1], threading.Event)
        ):
            with self._book_lock:
                self.threads[key] = ret
        elif isinstance(ret, subprocess.Popen):
            with self._book_lock:
                self.processes[key] = ret
        else:
            self._error(
                conn,
                f"handler of {name!r} returned {type(ret).__name__}; return an int, a "
                "(Thread, Event) pair, a subprocess.Popen or a str/bytes reply",
            )

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
            return
        deadline = time.monotonic() + self.thread_join_timeout_s
        for key, (th, _ev) in items:
            if th is threading.current_thread() or th.ident is None:
                continue
            th.join(max(0.0, deadline - time.monotonic()))
            if th.is_alive():
                self.logger.warning(
                    "thread %s (%s) ignored its stop event for %.1f s; left running as daemon=%s",
                    th.name,
                    key,
                    self.thread_join_timeout_s,
                    th.daemon,
                )

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
