"""The command server's I/O thread: one selector for every connection.

It accepts clients, reads and frames their bytes, answers the ``UP`` health
check directly, hands every other command to the handler thread
(:mod:`dpshm.dareplane._dispatcher`), drains output buffers, runs the framing
timers and enforces the connection limits. Nothing here blocks, so an idle,
slow or flooding client costs the others nothing but its share of a select
loop. :class:`IOLoop` is a base of
:class:`~dpshm.dareplane.server.DefaultServer`; its attributes are set there.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any

from dpshm._wake import Waker
from dpshm.dareplane._conn import BUILTINS_ONLY, SILENT, Connection
from dpshm.dareplane._dispatcher import Dispatcher
from dpshm.dareplane._ratelog import RateLimitedLog
from dpshm.dareplane.framing import (
    AFTER_IDLE,
    FOREIGN,
    NOW,
    SNIFF_BYTES,
    UNDECIDED,
    WAIT,
    CommandFramer,
    FramingError,
    sniff,
)
from dpshm.dareplane.protocol import error_line

#: Bytes read per receive (small enough that one client's burst is a short turn).
RECV_BYTES = 8192
_UP_RAW = frozenset({b"UP", b"UP|"})
_WAKE = object()
_ACCEPTED, _CLOSED = "on_connection_accepted", "on_connection_closed"
_IDLE, _STALE, _SNIFF, _SEND, _ACCEPT = range(5)


class IOLoop:
    """Selector loop of the command server (see the module docstring)."""

    # set by DefaultServer.__init__
    name: str
    logger: logging.Logger
    token: str | None
    max_clients: int
    max_message_bytes: int
    max_output_bytes: int
    idle_dispatch_s: float
    stale_dispatch_s: float
    send_timeout_s: float
    accept_timeout_s: float
    server_socket: socket.socket | None
    listen_stop_event: threading.Event
    msg_interpreter: Any
    _conns: dict[int, Connection]
    _builtins: list[str]
    _junk_log: RateLimitedLog

    def _io_setup(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._waker = Waker()
        self._sel.register(self._waker, selectors.EVENT_READ, _WAKE)
        assert self.server_socket is not None
        self.server_socket.setblocking(False)
        self._sel.register(self.server_socket, selectors.EVENT_READ, None)
        self._requests: deque[Connection] = deque()
        self._timers: list[tuple[float, int, int, Connection, int]] = []
        self._timer_seq = itertools.count()
        self._conn_log = RateLimitedLog(self.logger, rate=2.0, burst=20)
        self._dispatcher = Dispatcher(self._run_item, self._resume, f"dpshm-commands-{self.name}")
        self._dispatcher.start()

    def _io_teardown(self, dispatcher_timeout: float) -> None:
        self._close_listening_socket()
        for conn in list(self._conns.values()):
            conn.discard_queue = True  # stopping: run no more of its commands, only hooks
            self._drop(conn, "server stopping")
        if not self._dispatcher.stop(dispatcher_timeout):
            self.logger.warning(
                "a handler of %s is still running %.1f s after the server stopped",
                self.name,
                dispatcher_timeout,
            )
        self._sel.close()
        self._waker.close()

    def _close_listening_socket(self) -> None:
        sock, self.server_socket = self.server_socket, None
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError, AttributeError):
                self._sel.unregister(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _wake(self) -> None:
        with contextlib.suppress(AttributeError):  # before _io_setup
            self._waker.wake()

    def _request(self, conn: Connection) -> None:
        """A connection wants writing, closing or reading again (any thread)."""
        self._requests.append(conn)
        self._wake()

    # -- the loop --------------------------------------------------------------
    def _io_loop(self) -> None:
        sel = self._sel
        while not self.listen_stop_event.is_set():
            timeout = self.accept_timeout_s
            if self._timers:
                timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
            for key, mask in sel.select(timeout):
                self._guarded(self._event, key.data, mask)
            while self._requests:
                self._guarded(self._settle, self._requests.popleft())
            self._guarded(self._run_timers)

    def _guarded(self, step: Any, *args: Any) -> None:
        """Run one step of the loop; a bug in it drops the connection, never the server."""
        try:
            step(*args)
        except Exception:
            conn = next((a for a in args if isinstance(a, Connection)), None)
            self.logger.exception(
                "%s: unexpected error serving %s; %s",
                self.name,
                conn.addr if conn is not None else "the server",
                "connection dropped" if conn is not None else "going on",
            )
            if conn is not None:
                with contextlib.suppress(Exception):
                    self._drop(conn, "internal error")

    def _event(self, what: Any, mask: int) -> None:
        if what is None:
            self._accept_ready()
        elif what is _WAKE:
            self._waker.drain()
        else:
            if mask & selectors.EVENT_WRITE:
                what.flush()
            if mask & selectors.EVENT_READ and not what.closed:
                self._readable(what)
            self._settle(what)

    def _settle(self, conn: Connection) -> None:
        """Close a connection that asked for it, or update what the selector watches."""
        if conn.closed:
            return
        if conn.close_reason is not None:
            self._drop(conn, conn.close_reason)
            return
        events = (0 if conn.paused else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if conn.out else 0
        )
        if events & selectors.EVENT_WRITE and not conn.events & selectors.EVENT_WRITE:
            self._timer(self.send_timeout_s, _SEND, conn, conn.tx_seq)
        if events == conn.events:
            return
        if conn.events == 0:
            self._sel.register(conn.sock, events, conn)
        elif events == 0:
            self._sel.unregister(conn.sock)
        else:
            self._sel.modify(conn.sock, events, conn)
        conn.events = events

    # -- timers ----------------------------------------------------------------
    def _timer(self, delay: float, kind: int, conn: Connection | None, stamp: int) -> None:
        heapq.heappush(
            self._timers, (time.monotonic() + delay, next(self._timer_seq), kind, conn, stamp)
        )

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, conn, stamp = heapq.heappop(self._timers)
            if kind == _ACCEPT:
                if self.server_socket is not None:
                    with contextlib.suppress(KeyError, ValueError):
                        self._sel.register(self.server_socket, selectors.EVENT_READ, None)
                continue
            if conn.closed:
                continue
            if kind == _SEND:
                if conn.out and conn.tx_seq == stamp:
                    self._drop(
                        conn,
                        f"client did not read its replies for {self.send_timeout_s} s",
                    )
                elif conn.out:
                    self._timer(self.send_timeout_s, _SEND, conn, conn.tx_seq)
            elif conn.rx_seq != stamp:
                continue  # bytes arrived since: a newer timer decides
            elif conn.paused:  # not reading it (commands queued): the sender is not idle
                delay = self.idle_dispatch_s if kind == _IDLE else self.stale_dispatch_s
                self._timer(delay, kind, conn, stamp)
            elif kind == _SNIFF:
                data, conn.sniff = conn.sniff or b"", None
                self._frame(conn, data)
            elif kind == _IDLE:
                if self._pending(conn) in (NOW, AFTER_IDLE):
                    self._submit(conn, conn.framer.take())
            elif self._pending(conn) == WAIT:  # _STALE
                head = conn.framer.drop()
                if head:
                    self._queue_error(
                        conn,
                        f"incomplete command {head!r} not executed: nothing followed for "
                        f"{self.stale_dispatch_s} s; end every command with ';' or a newline",
                    )

    # -- accepting -------------------------------------------------------------
    def _accept_ready(self) -> None:
        for _ in range(64):
            if self.server_socket is None:
                return
            try:
                sock, addr = self.server_socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: stop accepting for a moment instead of spinning
                    self._conn_log.log(
                        logging.ERROR,
                        "accept",
                        "%s cannot accept clients: %s; retrying in 0.1 s",
                        self.name,
                        err,
                    )
                    self._sel.unregister(self.server_socket)
                    self._timer(0.1, _ACCEPT, None, 0)
                return
            self._admit(sock, addr)

    def _admit(self, sock: socket.socket, addr: Any) -> None:
        if len(self._conns) >= self.max_clients and not self._evict_for(addr):
            self._conn_log.log(
                logging.WARNING,
                "limit",
                "%s refused client %s: %d connections (max_clients) are open and none may "
                "be evicted; raise max_clients or close idle clients",
                self.name,
                addr,
                self.max_clients,
            )
            with contextlib.suppress(OSError):
                sock.setblocking(False)
                sock.send(
                    error_line(
                        f"too many clients ({self.max_clients} connected); close one or raise "
                        "max_clients"
                    ).encode()
                )
            sock.close()
            return
        framer = CommandFramer(self.max_message_bytes)
        conn = Connection(sock, addr, framer, self.max_output_bytes, self._request)
        conn.handle.logger = self.logger
        conn.events = 0
        self._conns[conn.id] = conn
        self._settle(conn)
        self._conn_log.log(logging.INFO, "conn", "client %s connected to %s", addr, self.name)
        if self._overridden(_ACCEPTED):
            self._dispatcher.put(conn, _ACCEPTED)  # the banner follows the hook
        else:
            conn.send(f"Connected to {self.name}\n".encode())

    def _evict_for(self, addr: Any) -> bool:
        """Close the idlest evictable connection to admit ``addr``; ``False`` if none may go."""
        keep = self._protected()
        victim = None
        for attempt in range(8):
            cands = [
                c
                for c in self._conns.values()
                if c not in keep
                and not c.scheduled
                and c.close_reason is None
                and not (self.token is not None and c.authenticated)
            ]
            if not cands:
                return False
            victim = min(cands, key=lambda c: (c.activity, c.last_active))
            if victim.activity != SILENT or victim.paused or attempt == 7:
                break
            # a silent connection may have just sent its first command (a probe that
            # connected before a burst of idle ones): read it before judging it idle
            seq = victim.rx_seq
            self._readable(victim)
            if victim.closed:
                return True  # it had hung up: its slot is free
            self._settle(victim)
            if victim.rx_seq == seq:
                break
        assert victim is not None
        now = time.monotonic()
        self._conn_log.log(
            logging.WARNING,
            "limit",
            "%s is at its limit of %d connections (max_clients): closing client %s "
            "(connected %.0f s ago, last active %.0f s ago, %s) to admit %s",
            self.name,
            self.max_clients,
            victim.addr,
            now - victim.connected_at,
            now - victim.last_active,
            ("never sent a command", "sent only built-ins", "sent commands")[victim.activity],
            addr,
        )
        victim.send(
            error_line(
                f"connection closed: the server is at its limit of {self.max_clients} "
                "connections and this one was the idlest"
            ).encode()
        )
        victim.flush()
        self._drop(victim, "evicted at the connection limit")
        return True

    # -- reading ---------------------------------------------------------------
    def _readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._drop(conn, f"receive failed: {err}")
            return
        if not data:
            self._eof(conn)
            return
        conn.rx_seq += 1
        conn.last_active = time.monotonic()
        if conn.sniff is not None:
            data = conn.sniff + data
            verdict = sniff(data[:SNIFF_BYTES])
            if verdict == UNDECIDED and len(data) < SNIFF_BYTES:
                conn.sniff = data  # e.g. 'GE': a command or 'GET /'? wait for more
                self._timer(self.stale_dispatch_s, _SNIFF, conn, conn.rx_seq)
                return
            conn.sniff = None
            if verdict not in (None, UNDECIDED):
                self._refuse_foreign(conn, verdict, data)
                return
        self._frame(conn, data)

    def _refuse_foreign(self, conn: Connection, proto: str, data: bytes) -> None:
        self._junk_log.log(
            logging.WARNING,
            "foreign",
            "%s closed the connection of %s without executing anything: it sent %s, not "
            "a Dareplane command (first bytes %r)",
            self.name,
            conn.addr,
            FOREIGN[proto],
            data[:40],
        )
        conn.send(
            error_line(
                f"this is a Dareplane command port and {FOREIGN[proto]} is refused; "
                "connection closed, nothing executed"
            ).encode()
        )
        conn.flush()
        self._drop(conn, f"{proto} request refused")

    def _feed(self, conn: Connection, data: bytes) -> None:
        items = conn.framer.feed(data)
        if len(items) == 1 and not isinstance(items[0], FramingError):
            self._submit(conn, items[0])  # the usual case: one command per segment
            return
        queued: list[Any] = []
        for item in items:
            if isinstance(item, FramingError):
                queued.append(item)
                continue
            if conn.activity == SILENT:
                conn.activity = BUILTINS_ONLY
            if item in _UP_RAW and not queued:
                self._submit(conn, item)
            else:
                queued.append(item)
        if queued:
            self._queue(conn, queued)

    def _frame(self, conn: Connection, data: bytes) -> None:
        self._feed(conn, data)
        kind = self._pending(conn)
        if kind == NOW:
            self._submit(conn, conn.framer.take())
        elif kind == AFTER_IDLE:
            self._timer(self.idle_dispatch_s, _IDLE, conn, conn.rx_seq)
        elif kind == WAIT:
            self._timer(self.stale_dispatch_s, _STALE, conn, conn.rx_seq)

    def _pending(self, conn: Connection, eof: bool = False) -> int:
        return conn.framer.pending(
            {*self.pcommand_map, *self._builtins},  # type: ignore[attr-defined]
            self._builtins,
            lenient=self.msg_interpreter is not None,
            auth=self.token is not None,
            eof=eof,
        )

    def _eof(self, conn: Connection) -> None:
        if conn.sniff:
            data, conn.sniff = conn.sniff, None
            verdict = sniff(data)
            if verdict not in (None, UNDECIDED):
                self._refuse_foreign(conn, verdict, data)
                return
            self._feed(conn, data)
        kind = self._pending(conn, eof=True)
        if kind == NOW:
            self._submit(conn, conn.framer.take())
        elif kind == WAIT:
            head = conn.framer.drop()
            if head:
                self._junk_log.log(
                    logging.WARNING,
                    "error",
                    "%s: client %s disconnected mid-command; dropped %r",
                    self.name,
                    conn.addr,
                    head,
                )
        self._drop(conn, "client disconnected")

    def _submit(self, conn: Connection, raw: bytes) -> None:
        """A complete command: answer ``UP`` here if nothing is queued, else queue it."""
        if conn.activity == SILENT:
            conn.activity = BUILTINS_ONLY
        if raw in _UP_RAW and not conn.scheduled and (self.token is None or conn.authenticated):
            conn.send(b"1")  # the health check: no parsing, no logging, no queueing
            return
        self._queue(conn, [raw])

    def _queue(self, conn: Connection, items: list[Any]) -> None:
        if self._dispatcher.put(conn, *items) and not conn.paused:
            conn.paused = True  # stop reading it until the handler thread caught up
            self._settle(conn)

    def _queue_error(self, conn: Connection, text: str) -> None:
        self._queue(conn, [FramingError(text)])

    def _resume(self, conn: Connection) -> None:
        conn.paused = False
        self._request(conn)

    def _drop(self, conn: Connection, reason: str) -> None:
        """Close a connection (I/O thread); its queued commands still run."""
        if conn.closed:
            return
        if conn.events:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
            conn.events = 0
        if conn.close_reason is None:
            conn.close_reason = reason
        conn.close_socket()
        self._conns.pop(conn.id, None)
        self._conn_log.log(logging.INFO, "conn", "client %s disconnected (%s)", conn.addr, reason)
        if self._overridden(_CLOSED):
            self._dispatcher.put(conn, _CLOSED)

    # -- provided by DefaultServer ---------------------------------------------
    def _run_item(self, conn: Connection, item: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    def _overridden(self, hook: str) -> bool:  # pragma: no cover
        raise NotImplementedError
