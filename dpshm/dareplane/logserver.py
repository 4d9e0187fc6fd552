"""Dareplane log server: receive JSON log records and write one consolidated log.

Reads the wire format of :mod:`dpshm.dareplane.logrecord` (4-byte big-endian
length + UTF-8 JSON object) from any number of senders. One thread serves all
of them (a selector), so idle connections cost a socket each, not a thread.

Every resource a sender can make it hold is bounded, and every limit says so
in the log file when it is hit:

* ``max_connections`` simultaneous senders. At the limit a new connection
  displaces the oldest one that never sent a record (a flood of idle or
  slow connections only displaces itself); when every connection has sent
  records, the new one is closed.
* ``max_record_bytes`` per record; a longer one is skipped as it arrives
  (nothing held) and the sender's later records are read. A length beyond
  64 times that (at least 64 MiB) is not a record: the connection is closed
  (an HTTP request announces 1.2 GB).
* ``max_buffered_bytes`` over all partly received records; past it the
  connection holding the largest part is closed.
* ``stall_timeout_s``: a connection that sent part of a record and then
  nothing for that long is closed. An idle connection between records may stay
  open for ever (a module keeps its connection for a whole session).

A record is never dropped or changed without a line in the log saying so: a
frame that is not UTF-8 JSON or not an object, a sender gone mid-record and a
closed connection each write a WARNING from ``dpshm.logserver``; a record with
a non-numeric time is written with the receive time and a note (see
:func:`~dpshm.dareplane.logrecord.dict_to_record`). Those notes are rate
limited (``notice_interval_s`` per kind, with the count of the ones held back).
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpshm._logging import library_logger
from dpshm.dareplane.logrecord import LineFormatter, dict_to_record, escape_controls
from dpshm.dareplane.logs import DEFAULT_LOG_PORT
from dpshm.errors import ConfigError

__all__ = ["LogRecordSocketReceiver"]

logger = library_logger(__name__)
NOTE_LOGGER = "dpshm.logserver"
_POLL_S = 0.1
_RECV_BYTES = 65536
_HEADER = struct.Struct(">L")


class _Peer:
    """One sender: socket, bytes of the record being received, timing."""

    __slots__ = ("accepted", "addr", "buf", "need", "records", "skip", "sock", "stalled_since")

    def __init__(self, sock: socket.socket, addr: Any) -> None:
        self.sock = sock
        self.addr = addr
        self.accepted = time.monotonic()
        self.records = 0  # records received on this connection
        self.buf = bytearray()
        self.need: int | None = None  # body length once the header is read
        self.skip = 0  # bytes still to discard of a record over max_record_bytes
        self.stalled_since: float | None = None  # partial record: time of its last byte

    @property
    def partial(self) -> bool:
        return bool(self.buf) or self.need is not None or self.skip > 0

    def describe(self) -> str:
        if isinstance(self.addr, tuple):
            return f"{self.addr[0]}:{self.addr[1]}"
        return str(self.addr)


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
        Longest record (JSON body); a longer one is skipped with a note.
    max_connections : int
        Simultaneous senders (see the module notes for who makes room).
    max_buffered_bytes : int
        Bytes of partly received records held over all connections.
    stall_timeout_s : float
        A connection stopping mid-record for this long is closed.
    notice_interval_s : float
        Shortest interval between two notes of the same kind in the log.

    Raises
    ------
    ConfigError
        A limit out of range (also a ``ValueError``).
    OSError
        The address cannot be bound (another log server runs there).
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = DEFAULT_LOG_PORT,
        logfile: str | Path | None = Path("default_socket.log"),
        *,
        console: bool = True,
        record_callback: Callable[[logging.LogRecord], None] | None = None,
        max_record_bytes: int = 1 << 20,
        max_connections: int = 64,
        max_buffered_bytes: int = 32 << 20,
        stall_timeout_s: float = 30.0,
        notice_interval_s: float = 10.0,
    ) -> None:
        for what, value, low in (
            ("max_record_bytes", max_record_bytes, 64),
            ("max_connections", max_connections, 1),
            ("max_buffered_bytes", max_buffered_bytes, 64),
        ):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{what} must be an int >= {low}, got {value!r}")
        if max_buffered_bytes < max_record_bytes + 4:
            raise ConfigError(
                f"max_buffered_bytes ({max_buffered_bytes}) must hold one whole record: "
                f"at least max_record_bytes + 4 = {max_record_bytes + 4}"
            )
        if not stall_timeout_s > 0 or not notice_interval_s >= 0:
            raise ConfigError(
                f"stall_timeout_s must be > 0 and notice_interval_s >= 0, got "
                f"{stall_timeout_s!r} and {notice_interval_s!r}"
            )
        self.abort = False
        self.record_callback = record_callback
        self.max_record_bytes = max_record_bytes
        self.max_connections = max_connections
        self.max_buffered_bytes = max_buffered_bytes
        self.stall_timeout_s = stall_timeout_s
        # a length beyond this is not an oversized record but junk (b"GET " is 1.2 GB)
        self._junk_bytes = max(64 * max_record_bytes, 64 << 20)
        self.notice_interval_s = notice_interval_s
        self.received = 0
        #: notes written (limits hit, unreadable frames, lost partial records)
        self.notes = 0
        #: connections closed at once because ``max_connections`` were open
        self.refused = 0
        self._handlers: list[logging.Handler] = []
        self._peers: dict[socket.socket, _Peer] = {}
        self._buffered = 0
        self._held: dict[str, list[float]] = {}  # note kind -> [last time, held back]
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self.socket: socket.socket | None = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError as err:
            sock.close()
            raise OSError(
                err.errno,
                f"log receiver cannot listen on {host}:{port}: {err.strerror}; "
                "another log server may be running, or choose another --port",
            ) from None
        sock.setblocking(False)
        self.socket = sock
        self.server_address = sock.getsockname()
        self.host, self.port = self.server_address[0], self.server_address[1]
        self.logfile = Path(logfile) if logfile is not None else None
        fmt = LineFormatter()
        if self.logfile is not None:
            fh = logging.FileHandler(self.logfile, encoding="utf-8")
            fh.setFormatter(fmt)
            self._handlers.append(fh)
        if console:
            ch = logging.StreamHandler(sys.stderr)
            ch.setFormatter(fmt)
            self._handlers.append(ch)

    # -- lifecycle -------------------------------------------------------------------
    def serve_until_stopped(self) -> None:
        """Serve senders until :meth:`stop` (or ``abort = True``); then clean up."""
        if self.socket is None:
            raise RuntimeError("receiver is closed; create a new LogRecordSocketReceiver")
        self._done.clear()
        logger.info("log receiver listening on %s:%d", self.host, self.port)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self.socket, selectors.EVENT_READ, None)
                while not (self._stop.is_set() or self.abort):
                    for key, _ in sel.select(_POLL_S):
                        if key.data is None:
                            self._accept(sel)
                        else:
                            self._read(sel, key.data)
                    self._close_stalled(sel)
                    self._flush_held()
                for peer in list(self._peers.values()):
                    self._drop(sel, peer, None)
        finally:
            self._stop.set()
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

    @property
    def connections(self) -> int:
        """Senders connected now."""
        return len(self._peers)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of partly received records held now (over all connections)."""
        return self._buffered

    # -- connections -----------------------------------------------------------------
    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self.socket is not None
        for _ in range(64):  # a burst of connections; the rest on the next round
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                logger.warning("log receiver: accept failed: %s", err)
                return
            if len(self._peers) >= self.max_connections and not self._evict(sel, addr):
                self.refused += 1
                with contextlib.suppress(OSError):
                    sock.close()
                self._note(
                    "refused",
                    f"connection limit reached: {self.max_connections} senders connected, each "
                    f"has sent records; closed a new connection from {addr[0]}:{addr[1]} "
                    f"({self.refused} so far). Raise max_connections if these are real senders",
                )
                continue
            sock.setblocking(False)
            peer = _Peer(sock, addr)
            self._peers[sock] = peer
            sel.register(sock, selectors.EVENT_READ, peer)

    def _evict(self, sel: selectors.BaseSelector, addr: Any) -> bool:
        """Make room at the limit: close the oldest connection that never sent a record.

        A flood of idle (or dripping) connections thus only displaces itself,
        never a module that logs. False when every connection has sent records.
        """
        silent = [p for p in self._peers.values() if p.records == 0]
        if not silent:
            return False
        oldest = min(silent, key=lambda p: p.accepted)
        self._drop(
            sel,
            oldest,
            f"connection limit ({self.max_connections}) reached: closed as the oldest "
            f"connection that never sent a record, to admit {addr[0]}:{addr[1]}",
        )
        return True

    def _drop(self, sel: selectors.BaseSelector, peer: _Peer, why: str | None) -> None:
        """Close ``peer``; say why, and that a record was lost if one was half received."""
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(peer.sock)
        self._peers.pop(peer.sock, None)
        with contextlib.suppress(OSError):
            peer.sock.close()
        self._buffered -= len(peer.buf)
        lost = ""
        if peer.partial:
            have = len(peer.buf) if peer.need is not None else 0
            size = f"{have} of {peer.need}" if peer.need is not None else f"{len(peer.buf)} of 4"
            lost = f"; the record being received ({size} bytes) is lost"
        peer.buf = bytearray()
        peer.need = None
        if why is not None or lost:
            self._note("closed", f"sender {peer.describe()}: {why or 'connection ended'}{lost}")

    def _close_stalled(self, sel: selectors.BaseSelector) -> None:
        if not self._peers:
            return
        limit = time.monotonic() - self.stall_timeout_s
        for peer in list(self._peers.values()):
            if peer.stalled_since is not None and peer.stalled_since < limit:
                self._drop(
                    sel, peer, f"sent part of a record, then nothing for {self.stall_timeout_s} s"
                )

    # -- reading ---------------------------------------------------------------------
    def _read(self, sel: selectors.BaseSelector, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._drop(sel, peer, f"connection error ({err})" if peer.partial else None)
            return
        if not data:
            self._drop(sel, peer, None)
            return
        peer.buf += data
        self._buffered += len(data)
        why = self._frames(peer)
        if why is not None:
            self._drop(sel, peer, why)
            return
        peer.stalled_since = time.monotonic() if peer.partial else None
        if self._buffered > self.max_buffered_bytes:
            biggest = max(self._peers.values(), key=lambda p: len(p.buf))
            self._drop(
                sel,
                biggest,
                f"partly received records exceed max_buffered_bytes={self.max_buffered_bytes} "
                "over all senders; closed the connection holding the most",
            )

    def _frames(self, peer: _Peer) -> str | None:
        """Handle every complete record in ``peer.buf``; a reason to close, or None."""
        buf = peer.buf
        pos = 0
        try:
            while True:
                if peer.skip:  # discard an oversized record as it arrives, holding nothing
                    take = min(peer.skip, len(buf) - pos)
                    pos += take
                    peer.skip -= take
                    if peer.skip:
                        return None
                if peer.need is None:
                    if len(buf) - pos < 4:
                        return None
                    (size,) = _HEADER.unpack_from(buf, pos)
                    pos += 4
                    if size == 0 or size > self._junk_bytes:
                        peer.need = size  # for the "lost" part of the note
                        return (
                            f"announced a record of {size} bytes: not a log-record stream "
                            "(an HTTP request or other junk); raise max_record_bytes if a "
                            "module really sends such records"
                        )
                    if size > self.max_record_bytes:
                        self._note(
                            "oversized",
                            f"sender {peer.describe()}: a record of {size} bytes is over "
                            f"max_record_bytes={self.max_record_bytes}; skipped (the sender's "
                            "later records are read). Raise max_record_bytes to keep such records",
                        )
                        peer.skip = size
                        continue
                    peer.need = size
                if len(buf) - pos < peer.need:
                    return None
                body = bytes(buf[pos : pos + peer.need])
                pos += peer.need
                peer.need = None
                self._record(peer, body)
        finally:
            if pos:
                del buf[:pos]
                self._buffered -= pos

    def _record(self, peer: _Peer, body: bytes) -> None:
        try:
            obj = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            self._note(
                "unreadable",
                f"sender {peer.describe()}: a record of {len(body)} bytes is not UTF-8 JSON "
                f"({escape_controls(str(err))[:120]}); skipped. Its start: {body[:80]!r}",
            )
            return
        if not isinstance(obj, dict):
            self._note(
                "unreadable",
                f"sender {peer.describe()}: a record is a JSON {type(obj).__name__}, "
                f"not an object; skipped. Its start: {body[:80]!r}",
            )
            return
        peer.records += 1
        self._handle(dict_to_record(obj), callback=True)

    # -- writing ---------------------------------------------------------------------
    def _note(self, kind: str, text: str) -> None:
        """Write a WARNING from ``dpshm.logserver`` into the log, rate limited per kind."""
        now = time.monotonic()
        held = self._held.setdefault(kind, [float("-inf"), 0])
        if now - held[0] < self.notice_interval_s:
            held[1] += 1
            return
        if held[1]:
            text += f" ({int(held[1])} more like this in the last {now - held[0]:.0f} s)"
        held[0], held[1] = now, 0
        self._write_note(text)

    def _write_note(self, text: str) -> None:
        self.notes += 1
        record = logging.LogRecord(NOTE_LOGGER, logging.WARNING, __file__, 0, text, (), None)
        self._handle(record, callback=False)

    def _flush_held(self) -> None:
        """Say how many notes were held back once their interval is over."""
        now = time.monotonic()
        for kind, held in self._held.items():
            if held[1] and now - held[0] >= self.notice_interval_s:
                text = (
                    f"{int(held[1])} more '{kind}' notes held back in the last "
                    f"{now - held[0]:.0f} s (notice_interval_s={self.notice_interval_s})"
                )
                held[0], held[1] = now, 0
                self._write_note(text)

    def _handle(self, record: logging.LogRecord, *, callback: bool) -> None:
        if callback:
            self.received += 1
        for h in self._handlers:
            h.handle(record)  # a failing handler reports through logging.Handler.handleError
        if callback and self.record_callback is not None:
            try:
                self.record_callback(record)
            except Exception:
                logger.exception("record_callback failed")
