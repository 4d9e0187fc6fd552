"""Dareplane log forwarding: ``get_logger`` and a non-blocking JSON socket handler.

The wire format (4-byte big-endian length + UTF-8 JSON, byte-compatible with
the Dareplane log server on port 9020) is defined in
:mod:`dpshm.dareplane.logrecord`; :func:`record_to_dict` and
:func:`encode_record` (and :func:`record_message`) are re-exported here.

Importing this module configures nothing; handlers are installed only by
:func:`get_logger`, :func:`server_logger` (a ``DefaultServer`` created without
``logger=``) or explicitly by the caller.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import socket
import threading
import time
from collections import deque

from dpshm._logging import WIRE_SAFE, called_from_logging_config, sturdy
from dpshm._threads import join_thread
from dpshm.dareplane.logrecord import (
    FORMAT,
    MAX_RECORD_BYTES,
    encode_record,
    record_message,
    record_to_dict,
)

__all__ = [
    "DEFAULT_LOG_PORT",
    "JsonSocketHandler",
    "encode_record",
    "get_logger",
    "protect",
    "record_message",
    "record_to_dict",
    "server_logger",
]

DEFAULT_LOG_PORT = 9020
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_SEND_ATTEMPTS = 3  # a frame whose send failed on this many fresh connections is dropped
_FORMATTER = logging.Formatter(FORMAT)


class JsonSocketHandler(logging.Handler):
    """Send records to a Dareplane log server without ever blocking the caller.

    ``emit`` serialises the record and puts the frame on a bounded queue; a
    background thread connects (with back-off), sends, and reconnects when the
    receiver goes away. When the queue is full new records are dropped and
    counted in :attr:`dropped`.

    Parameters
    ----------
    host : str
        Log server address.
    port : int
        Log server port (Dareplane: 9020).
    queue_size : int
        Frames buffered while no receiver is reachable.
    max_record_bytes : int
        Longest record sent (the receiver's default limit, 1 MiB); a longer
        one is cut (see :func:`~dpshm.dareplane.logrecord.encode_record`). A
        frame whose send fails on three fresh connections in a row is dropped
        and counted in :attr:`dropped`.
    connect_timeout_s : float
        Timeout of one connection attempt and of one send.
    retry_max_s : float
        Longest pause between connection attempts (back-off from 50 ms).
    flush_timeout_s : float
        How long :meth:`close` waits for buffered records to be delivered.
    level : int
        Handler level.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_LOG_PORT,
        *,
        queue_size: int = 10_000,
        max_record_bytes: int = MAX_RECORD_BYTES,
        connect_timeout_s: float = 0.5,
        retry_max_s: float = 1.0,
        flush_timeout_s: float = 1.0,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        if max_record_bytes < 1024:
            raise ValueError(f"max_record_bytes must be >= 1024, got {max_record_bytes!r}")
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.retry_max_s = retry_max_s
        self.flush_timeout_s = flush_timeout_s
        self.dropped = 0
        self.sent = 0
        self.queue_size = queue_size
        self.max_record_bytes = max_record_bytes
        self._buf: deque[bytes] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._in_hand = 0  # 1 while the sender holds a frame it has not sent yet

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record; never blocks (drops and counts when full).

        A record that another socket handler to the same port will send too
        (dareplane-utils' ``get_logger`` puts one on the root logger, which a
        propagating logger reaches) is left to that handler: the log server
        gets it once.
        """
        if self._closed or self._sent_elsewhere(record):
            return
        try:
            frame = encode_record(record, self.max_record_bytes)
        except Exception:
            self.handleError(record)
            return
        if self._thread is None:
            self._start()
        if len(self._buf) >= self.queue_size:
            self.dropped += 1
            return
        self._buf.append(frame)  # deque.append is atomic: no lock on the caller's path
        if not self._wake.is_set():
            self._wake.set()

    def _sent_elsewhere(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            for h in logger.handlers:
                if (
                    h is not self
                    and isinstance(h, logging.handlers.SocketHandler)
                    and h.port == self.port
                    and (h.host == self.host or {h.host, self.host} <= _LOOPBACK)
                ):
                    return True
            logger = logger.parent if logger.propagate else None
        return False

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name=f"dpshm-logsend-{self.port}", daemon=True
                )
                self._thread.start()

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout_s)
        except OSError:
            return None
        sock.settimeout(self.connect_timeout_s)
        return sock

    def _run(self) -> None:
        backoff = 0.05
        failures = 0  # failed sends of the frame in hand, each on a fresh connection
        frame: bytes | None = None
        while True:
            if frame is None:
                try:
                    frame = self._buf.popleft()
                    self._in_hand = 1
                except IndexError:
                    if self._stop.is_set():
                        break
                    self._wake.clear()
                    if not self._buf:
                        self._wake.wait(0.1)
                    continue
            if self._sock is None:
                self._sock = self._connect()
                if self._sock is None:
                    if self._stop.wait(backoff):
                        break
                    backoff = min(backoff * 2, self.retry_max_s)
                    continue
                backoff = 0.05
            try:
                self._sock.sendall(frame)
            except OSError:
                with contextlib.suppress(OSError):
                    self._sock.close()
                self._sock = None
                failures += 1
                if failures < _SEND_ATTEMPTS:
                    continue  # resend the whole frame on a new connection
                self.dropped += 1  # the receiver keeps refusing this frame
                failures = 0
                frame = None
                self._in_hand = 0
                continue
            self.sent += 1
            failures = 0
            frame = None
            self._in_hand = 0
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    @property
    def pending(self) -> int:
        """Records accepted but not yet sent."""
        return len(self._buf) + self._in_hand

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until all queued records are sent; return whether they were.

        Waits up to ``timeout`` (default ``flush_timeout_s``).
        """
        if self._thread is None:
            return self.pending == 0
        timeout = self.flush_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.pending and self._thread.is_alive():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.02)
        return self.pending == 0

    def close(self) -> None:
        """Flush (bounded by ``flush_timeout_s``), stop the sender, close the socket.

        Idempotent. Records still queued after the wait are counted as dropped.
        A close that comes from ``logging.config`` (another library's
        ``dictConfig`` closes every existing handler) is ignored: the handler
        keeps forwarding the records of the loggers it is on.
        """
        if called_from_logging_config():
            return
        if self._closed:
            return
        with self._start_lock:
            self._closed = True
        if self._thread is not None:
            self.flush()
            self._stop.set()
            join_thread(self._thread, self.connect_timeout_s + 1.0)
            self.dropped += self.pending
            self._buf.clear()
            self._in_hand = 0
        super().close()


_socket_handler: JsonSocketHandler | None = None
_console_handler: logging.Handler | None = None
_setup_lock = threading.Lock()


def _shared_handlers() -> tuple[JsonSocketHandler, logging.Handler]:
    global _socket_handler, _console_handler
    with _setup_lock:
        if _socket_handler is None or _socket_handler._closed:
            _socket_handler = JsonSocketHandler("127.0.0.1", DEFAULT_LOG_PORT)
            _socket_handler.setFormatter(_FORMATTER)
        if _console_handler is None:
            _console_handler = logging.StreamHandler()
            _console_handler.setFormatter(_FORMATTER)
        return _socket_handler, _console_handler


def get_logger(
    name: str,
    add_console_handler: bool = False,
    colors: dict[str, str] | None = None,
    no_socket_handler: bool = False,
) -> logging.Logger:
    """Return a logger that forwards to the Dareplane log server on 127.0.0.1:9020.

    Drop-in for ``dareplane_utils.logging.logger.get_logger``: the named logger
    gets the shared :class:`JsonSocketHandler` (unless ``no_socket_handler``)
    and, if asked, a console handler; it does not propagate to the root logger.
    Unlike the original, the root logger is left untouched and nothing happens
    at import time. The logger's level is not changed (set it yourself, e.g.
    ``logger.setLevel("DEBUG")``). The logger stays enabled when a library
    later runs ``logging.config.dictConfig`` with ``disable_existing_loggers``
    (dareplane-utils does on import); see :func:`dpshm._logging.sturdy`.

    Parameters
    ----------
    name : str
        Logger name.
    add_console_handler : bool
        Also log to stderr.
    colors : dict, optional
        Accepted for compatibility (the original's third parameter: colorlog
        colours per level) and ignored: the console handler is not coloured.
    no_socket_handler : bool
        Do not forward to the log server (removes the shared socket handler).

    Returns
    -------
    logging.Logger
    """
    sock_h, console_h = _shared_handlers()
    logger = protect(sturdy(logging.getLogger(name)))
    if add_console_handler and console_h not in logger.handlers:
        logger.addHandler(console_h)
    if no_socket_handler:
        for h in list(logger.handlers):
            if isinstance(h, JsonSocketHandler):
                logger.removeHandler(h)
    elif sock_h not in logger.handlers:
        logger.addHandler(sock_h)
    logger.propagate = False
    return logger


def protect(logger: logging.Logger) -> logging.Logger:
    """Make the records dpshm logs through ``logger`` readable by every receiver.

    Adds a filter that rewrites records logged from dpshm's own code (never
    the module's own records) so that dareplane-utils' ``UJsonSocketHandler``
    and log server show them correctly (see :func:`dpshm._logging.make_wire_safe`).
    ``DefaultServer`` and ``StreamWatcher`` call it on the ``logger`` they are
    given. Idempotent; returns ``logger``.
    """
    if WIRE_SAFE not in logger.filters:
        logger.addFilter(WIRE_SAFE)
    return logger


def server_logger(name: str = "dpshm.dareplane.server") -> logging.Logger:
    """The logger of a ``DefaultServer`` created without ``logger=``.

    As the original's default (dareplane-utils' ``get_logger``), its records
    reach the Dareplane log server on 127.0.0.1:9020: the shared
    :class:`JsonSocketHandler` is added; unlike ``get_logger`` it still
    propagates, so handlers on the root logger see the records too. Its level
    is not set (the root's WARNING applies unless you set one).
    """
    sock_h, _ = _shared_handlers()
    logger = sturdy(logging.getLogger(name))
    protect(logger)
    if sock_h not in logger.handlers:
        logger.addHandler(sock_h)
    return logger
