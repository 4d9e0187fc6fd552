"""One client connection of the command server, and the socket a module writes callbacks to.

A :class:`Connection` owns a non-blocking socket. Any thread may
:meth:`~Connection.send`: bytes go out at once as far as the socket takes
them, the rest waits in a bounded output buffer that the server's I/O thread
drains. Only the I/O thread closes the socket (other threads ask it to), so
the selector never sees a file descriptor that was closed under it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from dpshm._logging import library_logger
from dpshm.dareplane.framing import CommandFramer

# what a connection did so far (for choosing whom to evict at the connection limit)
SILENT, BUILTINS_ONLY, COMMANDED = 0, 1, 2

_ids = itertools.count(1)
#: Refused commands a connection may send at once, and per second after that,
#: before it is closed as a junk source.
ERROR_BURST, ERROR_RATE = 200.0, 20.0


class Connection:
    """One accepted client: socket, framing state, output buffer, command queue.

    Parameters
    ----------
    sock : socket.socket
        The accepted socket (made non-blocking here).
    addr : Any
        The peer address.
    framer : CommandFramer
        Its framing state.
    max_output_bytes : int
        Largest amount of unsent output; beyond it the client is not reading
        and :meth:`send` asks for the connection to be closed.
    request : Callable[[Connection], None]
        Tells the I/O thread that this connection wants writing or closing.
    """

    def __init__(
        self,
        sock: socket.socket,
        addr: Any,
        framer: CommandFramer,
        max_output_bytes: int,
        request: Callable[[Connection], None],
    ) -> None:
        sock.setblocking(False)
        self.id = next(_ids)
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.framer = framer
        self.max_output_bytes = max_output_bytes
        self._request = request
        self.lock = threading.Lock()
        self.out = bytearray()
        self.closed = False  # the socket is closed (I/O thread)
        self.close_reason: str | None = None  # closing was asked for
        self.authenticated = False
        self.sniff: bytes | None = b""  # first bytes while the protocol is undecided
        self.queue: deque[Any] = deque()  # commands and hooks waiting for the dispatcher
        self.queued_bytes = 0  # bytes of the commands in it
        self.scheduled = False  # in the dispatcher's ready queue or being run
        self.paused = False  # reading paused: too many commands queued
        self.events = 0  # what the selector watches (I/O thread)
        self.connected_at = time.monotonic()
        self.last_active = self.connected_at
        self.rx_seq = 0  # bumped on every receive (timers compare it)
        self.tx_seq = 0  # bumped on every write progress
        self.activity = SILENT
        self.dropped_callbacks = 0
        self.error_budget = [ERROR_BURST, self.connected_at]  # tokens, last refill
        self.discard_queue = False  # a junk source, or the server stopping: queue not run
        self.handle = CallbackSocket(self)

    def __repr__(self) -> str:
        return f"<connection {self.id} from {self.addr}>"

    def spend_error(self) -> bool:
        """Count one refused command; ``False`` once the budget is exhausted."""
        now = time.monotonic()
        tokens, last = self.error_budget
        tokens = min(ERROR_BURST, tokens + (now - last) * ERROR_RATE)
        self.error_budget = [tokens - 1.0, now]
        return tokens >= 1.0

    # -- output (any thread) ---------------------------------------------------
    def send(self, data: bytes) -> bool:
        """Queue ``data`` for the client; ``False`` if the connection is closed or closing."""
        with self.lock:
            if self.closed or self.close_reason is not None:
                return False
            if not self.out:
                try:
                    n = self.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError as err:
                    self._ask_close(f"send failed: {err}")
                    return False
                if n:
                    self.tx_seq += 1
                data = data[n:]
                if not data:
                    return True
            if len(self.out) + len(data) > self.max_output_bytes:
                self._ask_close(
                    f"client is not reading: more than {self.max_output_bytes} bytes of replies "
                    "and callbacks unsent"
                )
                return False
            first = not self.out
            self.out += data
        if first:
            self._request(self)
        return True

    def flush(self) -> bool:
        """Send buffered output (I/O thread); ``True`` when the buffer is empty."""
        with self.lock:
            if self.closed:
                return True
            while self.out:
                try:
                    n = self.sock.send(self.out)
                except (BlockingIOError, InterruptedError):
                    return False
                except OSError as err:
                    self.out.clear()
                    self._ask_close(f"send failed: {err}")
                    return True
                del self.out[:n]
                self.tx_seq += 1
            return True

    def ask_close(self, reason: str) -> None:
        """Ask the I/O thread to close this connection (any thread)."""
        with self.lock:
            self._ask_close(reason)

    def _ask_close(self, reason: str) -> None:
        if self.close_reason is None and not self.closed:
            self.close_reason = reason
            self._request(self)

    def close_socket(self) -> None:
        """Close the socket (I/O thread only, after unregistering it)."""
        with self.lock:
            self.closed = True
            self.out.clear()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


class CallbackSocket:
    """What ``server.current_conn`` returns: the client's socket, safe to write to from any thread.

    ``sendall``/``send`` queue the bytes for the client and return at once,
    never raise: on a connection that has closed the bytes are dropped and
    the first drop is logged at WARNING (later ones at DEBUG), so a module's
    thread that writes callbacks (``server.current_conn.sendall(...)``)
    survives its control room going away. Other attributes (``fileno``,
    ``getpeername``, ...) are the socket's.
    """

    __slots__ = ("_conn", "logger")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.logger: logging.Logger | None = None  # set by the server

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        """Queue ``data`` for the client (dropped, and logged, if it disconnected)."""
        data = bytes(data)
        if self._conn.send(data):
            return
        conn = self._conn
        conn.dropped_callbacks += 1
        log = self.logger or library_logger(__name__)
        if conn.dropped_callbacks == 1:
            log.warning(
                "client %s has disconnected (%s); %d bytes written to its connection "
                "(a callback) were dropped, and later ones will be too (logged at DEBUG)",
                conn.addr,
                conn.close_reason or "connection closed",
                len(data),
            )
        else:
            log.debug("callback to disconnected client %s dropped: %r", conn.addr, data[:80])

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        """As :meth:`sendall`; returns ``len(data)``."""
        self.sendall(data)
        return len(data)

    def close(self) -> None:
        """Close the client's connection."""
        self._conn.ask_close("closed by the module")

    def fileno(self) -> int:
        return -1 if self._conn.closed else self._conn.fd

    @property
    def closed(self) -> bool:
        """Whether the client's connection is closed or closing."""
        return self._conn.closed or self._conn.close_reason is not None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn.sock, name)

    def __repr__(self) -> str:
        return f"<CallbackSocket of {self._conn!r}>"
