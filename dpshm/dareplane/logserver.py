"""Dareplane log server: receive JSON log records and write one consolidated log.

Reads the wire format of :mod:`dpshm.dareplane.logs` (4-byte big-endian length + UTF-8
JSON object) from any number of senders, one thread per sender. A malformed
frame (length beyond ``max_record_bytes``, invalid JSON, not an object) drops
that connection with a warning; the receiver keeps serving the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpshm.dareplane.logs import DEFAULT_LOG_PORT

__all__ = ["LogRecordSocketReceiver"]

logger = logging.getLogger(__name__)
_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
_POLL_S = 0.1


class _BadFrame(Exception):
    pass


def _to_record(obj: dict[str, Any]) -> logging.LogRecord:
    record = logging.makeLogRecord(obj)
    for attr in ("created", "msecs", "relativeCreated"):
        value = getattr(record, attr, None)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                setattr(record, attr, float(value))
    if not isinstance(record.levelno, int):
        try:
            record.levelno = int(record.levelno)
        except (TypeError, ValueError):
            record.levelno = logging.INFO
    args = record.args
    if isinstance(args, str) or args is None:
        args = ()  # e.g. "()" from senders that stringified everything
    elif isinstance(args, list):
        args = tuple(args)
    if len(args) == 1 and isinstance(args[0], dict) and args[0]:
        args = args[0]  # mapping args, log.info("%(x)s", {"x": 1}): as LogRecord does
    record.args = args
    if not isinstance(record.msg, str):
        record.msg = str(record.msg)
    try:
        record.getMessage()
    except Exception:
        # wrong number of %s args, bad format: keep the text and the args readable
        record.msg = f"{record.msg} {list(record.args) if record.args else ''}".rstrip()
        record.args = ()
    record.exc_info = None  # the traceback travels as text in exc_text
    if record.exc_text in ("None", ""):
        record.exc_text = None
    return record


class LogRecordSocketReceiver:
    """TCP receiver of Dareplane JSON log records.

    Parameters
    ----------
    host : str
        Address to bind.
    port : int
        Port (Dareplane: 9020; 0 picks a free one, see :attr:`port`).
    logfile : str | Path | None
        File that receives every record (appended); None for no file.
    console : bool
        Also write every record to stderr.
    record_callback : Callable[[logging.LogRecord], None] | None
        Called with each received record (after the file and console).
    max_record_bytes : int
        Larger frames are treated as garbage.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = DEFAULT_LOG_PORT,
        logfile: str | Path | None = Path("default_socket.log"),
        *,
        console: bool = True,
        record_callback: Callable[[logging.LogRecord], None] | None = None,
        max_record_bytes: int = 16 << 20,
    ) -> None:
        self.abort = False
        self.record_callback = record_callback
        self.max_record_bytes = max_record_bytes
        self.received = 0
        self._handlers: list[logging.Handler] = []
        self._threads: set[threading.Thread] = set()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self.socket: socket.socket | None = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(32)
        except OSError as err:
            sock.close()
            raise OSError(
                err.errno,
                f"log receiver cannot listen on {host}:{port}: {err.strerror}; "
                "another log server may be running, or choose another --port",
            ) from None
        sock.settimeout(_POLL_S)
        self.socket = sock
        self.server_address = sock.getsockname()
        self.host, self.port = self.server_address[0], self.server_address[1]
        self.logfile = Path(logfile) if logfile is not None else None
        fmt = logging.Formatter(_FORMAT)
        if self.logfile is not None:
            fh = logging.FileHandler(self.logfile, encoding="utf-8")
            fh.setFormatter(fmt)
            self._handlers.append(fh)
        if console:
            ch = logging.StreamHandler(sys.stderr)
            ch.setFormatter(fmt)
            self._handlers.append(ch)

    def serve_until_stopped(self) -> None:
        """Accept senders until :meth:`stop` (or ``abort = True``); then clean up."""
        if self.socket is None:
            raise RuntimeError("receiver is closed; create a new LogRecordSocketReceiver")
        self._done.clear()
        logger.info("log receiver listening on %s:%d", self.host, self.port)
        try:
            while not (self._stop.is_set() or self.abort):
                try:
                    conn, addr = self.socket.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                conn.settimeout(_POLL_S)
                th = threading.Thread(
                    target=self._serve, args=(conn, addr), name=f"dpshm-logrecv-{addr}", daemon=True
                )
                with self._lock:
                    self._conns.add(conn)
                    self._threads.add(th)
                th.start()
        finally:
            self._stop.set()
            with self._lock:
                threads = list(self._threads)
            for th in threads:
                th.join(2.0)
            self._close_socket()
            self._done.set()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop serving (from any thread) and wait up to ``timeout`` for it. Idempotent."""
        self._stop.set()
        self.abort = True
        if not self._done.wait(timeout):
            logger.warning("log receiver did not stop within %.1f s", timeout)

    def close(self) -> None:
        """Stop serving and release the port and the log file. Idempotent."""
        self.stop()
        self._close_socket()
        for h in self._handlers:
            h.close()

    def __enter__(self) -> LogRecordSocketReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close_socket(self) -> None:
        sock, self.socket = self.socket, None
        if sock is not None:
            sock.close()

    def _recv_exact(self, conn: socket.socket, n: int) -> bytes | None:
        """Read exactly ``n`` bytes; None on orderly EOF before the first byte."""
        buf = bytearray()
        while len(buf) < n:
            if self._stop.is_set():
                return None
            try:
                chunk = conn.recv(min(n - len(buf), 1 << 20))
            except TimeoutError:
                continue
            if not chunk:
                if buf:
                    raise _BadFrame(f"peer disconnected mid-record ({len(buf)} of {n} bytes)")
                return None
            buf += chunk
        return bytes(buf)

    def _serve(self, conn: socket.socket, addr: Any) -> None:
        try:
            while not self._stop.is_set():
                head = self._recv_exact(conn, 4)
                if head is None:
                    break
                (size,) = struct.unpack(">L", head)
                if size == 0 or size > self.max_record_bytes:
                    raise _BadFrame(f"frame length {size} outside 1..{self.max_record_bytes}")
                body = self._recv_exact(conn, size)
                if body is None:
                    if not self._stop.is_set():
                        raise _BadFrame("peer disconnected mid-record")
                    break
                try:
                    obj = json.loads(body.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise _BadFrame(f"record is not UTF-8 JSON ({err})") from None
                if not isinstance(obj, dict):
                    raise _BadFrame(f"record is a JSON {type(obj).__name__}, not an object")
                self._handle(_to_record(obj))
        except _BadFrame as err:
            logger.warning("log sender %s dropped: %s", addr, err)
        except OSError as err:
            logger.info("log sender %s gone: %s", addr, err)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())

    def _handle(self, record: logging.LogRecord) -> None:
        with self._write_lock:
            self.received += 1
            for h in self._handlers:
                try:
                    h.handle(record)
                except Exception:
                    logger.exception("log handler %r failed", h)
            if self.record_callback is not None:
                try:
                    self.record_callback(record)
                except Exception:
                    logger.exception("record_callback failed")
