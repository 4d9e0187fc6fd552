"""Dareplane log forwarding: ``get_logger`` and a non-blocking JSON socket handler.

Wire format (byte-compatible with the Dareplane log server, port 9020)::

    +----------------------+-----------------------------------------+
    | length: uint32, big  | UTF-8 JSON object of the LogRecord's    |
    | endian (">L")        | attributes (see :func:`record_to_dict`) |
    +----------------------+-----------------------------------------+

Importing this module configures nothing; handlers are installed only by
:func:`get_logger` (or explicitly by the caller).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import time
from collections import deque
from typing import Any

__all__ = ["DEFAULT_LOG_PORT", "JsonSocketHandler", "encode_record", "get_logger", "record_to_dict"]

DEFAULT_LOG_PORT = 9020
_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
_FORMATTER = logging.Formatter(_FORMAT)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    try:
        return str(value)
    except Exception:
        return repr(value)


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    """Return the JSON-ready dict of a LogRecord, exactly what goes on the wire.

    All attributes of the record are kept (``msg`` is the unformatted template,
    ``args`` a list); values JSON cannot carry become strings. If the record
    carries ``exc_info`` and no ``exc_text`` yet, the formatted traceback is put
    into ``exc_text``.

    Parameters
    ----------
    record : logging.LogRecord

    Returns
    -------
    dict
        Serialisable with ``json.dumps`` without a ``default``.
    """
    if record.exc_info and not record.exc_text:
        with contextlib.suppress(Exception):
            record.exc_text = _FORMATTER.formatException(record.exc_info)
    out = {str(k): _jsonable(v) for k, v in record.__dict__.items()}
    if record.exc_info:
        out["exc_info"] = str(record.exc_info)  # as the original handler's fallback
    if record.args is None:
        out["args"] = []
    elif isinstance(record.args, dict):
        out["args"] = [_jsonable(record.args)]
    return out


def encode_record(record: logging.LogRecord) -> bytes:
    """Frame a record for the wire: 4-byte big-endian length + UTF-8 JSON.

    The body is ``json.dumps(record_to_dict(record))``; the common case takes a
    faster path with the same result (non-serialisable values become ``str``).
    """
    d = record.__dict__
    body = None
    if not d.get("exc_info") and isinstance(d.get("args"), tuple):
        try:
            body = _DUMPS_FAST(d)
        except (TypeError, ValueError):
            body = None
    if body is None:
        body = json.dumps(record_to_dict(record), ensure_ascii=False)
    data = body.encode("utf-8", "replace")
    return struct.pack(">L", len(data)) + data


_DUMPS_FAST = json.JSONEncoder(default=str, ensure_ascii=False, skipkeys=False).encode


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
        connect_timeout_s: float = 0.5,
        retry_max_s: float = 1.0,
        flush_timeout_s: float = 1.0,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.retry_max_s = retry_max_s
        self.flush_timeout_s = flush_timeout_s
        self.dropped = 0
        self.sent = 0
        self.queue_size = queue_size
        self._buf: deque[bytes] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._in_hand = 0  # 1 while the sender holds a frame it has not sent yet

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record; never blocks (drops and counts when full)."""
        if self._closed:
            return
        try:
            frame = encode_record(record)
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
                continue  # resend the whole frame on a new connection
            self.sent += 1
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
        """
        if self._closed:
            return
        with self._start_lock:
            self._closed = True
        if self._thread is not None:
            self.flush()
            self._stop.set()
            self._thread.join(self.connect_timeout_s + 1.0)
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
    ``logger.setLevel("DEBUG")``).

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
    logger = logging.getLogger(name)
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
