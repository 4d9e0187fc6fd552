"""Doorbells: the low-overhead local wake path from the supervisor to its consumers.

Stdlib only, Linux only (:data:`AVAILABLE`). Each side owns one UNIX datagram
socket in the *abstract* namespace (the address starts with a NUL byte): no
file to create or leak, and the kernel drops the address when its process
dies, even by SIGKILL.

Wire format
-----------
Control socket of the supervisor (:class:`DoorbellServer`), address published
in the registry as ``endpoints["doorbell"]`` (the address without its leading
NUL, e.g. ``"dpshm-1000-default-4242-1a2b3c"``: uid, namespace, pid, run id)::

    b"S" + <stream key, UTF-8>     subscribe the sender's address to that stream
    b"U" + <stream key, UTF-8>     unsubscribe it (sent by a closing consumer)

A subscription is keyed by the sender's own (autobound) abstract address, so
subscribing twice is harmless. After each write into a ring the feed thread
rings every subscriber of that stream with one non-blocking ``sendto`` of a
4-byte bell::

    struct "<I": the ring generation after the write

A subscriber whose address is gone (``ECONNREFUSED``: it exited or was
killed) is dropped; a full receive queue is ignored: the consumer drains its
socket and reads the ring anyway. Bells only wake consumers: data is always
read from the ring, and a consumer checks the ring head before it sleeps, so
a lost bell costs latency, never data.

Consumer (:class:`Doorbell`): autobinds one socket, sends ``S`` to the
supervisor, then :meth:`Doorbell.wait` blocks in one ``recv_into`` of one bell
(the socket is blocking, its timeout is the kernel's ``SO_RCVTIMEO``: one
system call per wake, no ``poll``). Bells that queued up while the consumer
was busy are drained by :meth:`Doorbell.drain` when a wake finds no new data
(see :mod:`dpshm.shm.follow`). It re-subscribes when told to (new supervisor, or a
quiet interval).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import sys
import threading

from dpshm._logging import library_logger

log = library_logger(__name__)

AVAILABLE = sys.platform.startswith("linux") and hasattr(socket, "AF_UNIX")
BELL = struct.Struct("<I")
SUBSCRIBE = b"S"
UNSUBSCRIBE = b"U"
MAX_MESSAGE = 512  # control messages: 1 byte + stream key
TIMEOUT_SLACK_S = 0.001  # a consumer's SO_RCVTIMEO is re-set only when off by more
# struct timeval (seconds, microseconds) for SO_RCVTIMEO: native longs, or two 64-bit fields
# where a 32-bit system uses a 64-bit time_t; the first the kernel accepts is kept
_TIMEVALS = (struct.Struct("@ll"), struct.Struct("@qq"))
RECV_TIMEOUT_S = 0.2  # control thread's longest block (bounds close())
JOIN_TIMEOUT_S = 2.0

_GONE = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN)


def control_address(namespace: str, run_id: str) -> str:
    """Abstract address (without the leading NUL) of one supervisor's control socket."""
    return f"dpshm-{os.getuid()}-{namespace}-{os.getpid()}-{run_id}"


def _abstract(address: str) -> bytes:
    return b"\0" + address.encode()


def _require_available() -> None:
    if not AVAILABLE:
        raise OSError(
            f"doorbells need Linux abstract UNIX sockets (this is {sys.platform!r}); "
            "the ZeroMQ wake path is used instead"
        )


class DoorbellServer:
    """The supervisor's side: keeps the subscribers per stream and rings them.

    Parameters
    ----------
    address : str
        Abstract address to bind (see :func:`control_address`).

    Notes
    -----
    A thread (``dpshm-doorbell``) receives subscriptions; :meth:`ring` is
    called by the feed threads (thread-safe, never blocks).
    """

    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None

    def __init__(self, address: str):
        _require_available()
        self.address = address
        self._subs: dict[str, tuple[bytes, ...]] = {}  # copy-on-write, read without lock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.dropped = 0  # subscribers removed because their address was gone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(_abstract(address))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"cannot bind doorbell address {address!r}: {exc}. Is another supervisor "
                "using this namespace and run id?"
            ) from None
        sock.setblocking(False)  # ring() must never wait; the control thread polls
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="dpshm-doorbell", daemon=True)
        self._thread.start()

    def subscribers(self, stream: str) -> int:
        """Number of subscribers of ``stream``."""
        return len(self._subs.get(stream, ()))

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(int(RECV_TIMEOUT_S * 1000)):
                continue
            try:
                msg, addr = sock.recvfrom(MAX_MESSAGE)
            except BlockingIOError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("doorbell control socket failed")
                return
            if not msg or not addr:  # an unbound sender cannot be rung
                continue
            kind, stream = msg[:1], msg[1:].decode("utf-8", "replace")
            with self._lock:
                subs = self._subs.get(stream, ())
                if kind == SUBSCRIBE and addr not in subs:
                    self._subs[stream] = (*subs, addr)
                    log.debug("doorbell: %r subscribed to %r", addr, stream)
                elif kind == UNSUBSCRIBE and addr in subs:
                    self._subs[stream] = tuple(a for a in subs if a != addr)

    def ring(self, stream: str, generation: int) -> int:
        """Ring every subscriber of ``stream``; returns how many were rung."""
        subs = self._subs.get(stream)
        sock = self._sock
        if not subs or sock is None:
            return 0
        bell = BELL.pack(generation & 0xFFFFFFFF)
        gone = []
        n = 0
        for addr in subs:
            try:
                sock.sendto(bell, socket.MSG_DONTWAIT, addr)
                n += 1
            except BlockingIOError:  # its queue is full: it is awake and will read the ring
                n += 1
            except ConnectionRefusedError:  # its process is gone (even by SIGKILL)
                gone.append(addr)
            except OSError as exc:
                if exc.errno in _GONE:
                    gone.append(addr)
                else:
                    log.debug("doorbell: ringing %r failed: %s", addr, exc)
        if gone:
            self._forget(stream, gone)
        return n

    def _forget(self, stream: str, gone: list[bytes]) -> None:
        with self._lock:
            subs = self._subs.get(stream, ())
            self._subs[stream] = tuple(a for a in subs if a not in gone)
        self.dropped += len(gone)
        log.debug("doorbell: dropped %d dead subscriber(s) of %r", len(gone), stream)

    def close(self) -> None:
        """Stop the control thread and close the socket (idempotent)."""
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(JOIN_TIMEOUT_S)
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> DoorbellServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Doorbell:
    """A consumer's doorbell for one stream of one supervisor.

    Parameters
    ----------
    address : str
        The supervisor's control address (``endpoints["doorbell"]``).
    stream : str
        Registry key of the stream.
    """

    _sock: socket.socket | None = None

    def __init__(self, address: str, stream: str):
        _require_available()
        self.address = address
        self.stream = stream
        self._ctl = _abstract(address)
        self._buf = bytearray(BELL.size)
        self._view = memoryview(self._buf)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._timevals = _TIMEVALS
        self._rcvtimeo = -1.0  # SO_RCVTIMEO in seconds as last set
        try:
            sock.bind(b"")  # Linux autobind: a unique abstract address
            sock.setblocking(True)  # recv() without a Python-level poll; SO_RCVTIMEO bounds it
            self._set_rcvtimeo(sock, RECV_TIMEOUT_S)  # fails here, not in wait(), if unsupported
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._recv_into = sock.recv_into
        self.subscribed = False
        self.subscribe()

    def subscribe(self) -> bool:
        """(Re-)send the subscription; returns False if the supervisor is not reachable."""
        sock = self._sock
        if sock is None:
            return False
        try:
            # never blocks (the socket does, for recv): a full supervisor queue is retried later
            sock.sendto(SUBSCRIBE + self.stream.encode(), socket.MSG_DONTWAIT, self._ctl)
            self.subscribed = True
        except OSError as exc:  # gone (restarting) or its queue is full: retried later
            log.debug("doorbell: cannot subscribe to %r at %r: %s", self.stream, self.address, exc)
            self.subscribed = False
        return self.subscribed

    def wait(self, timeout: float) -> int | None:
        """Block up to ``timeout`` s for one bell; the generation it carries, or None.

        One blocking ``recv_into`` (the timeout is the socket's ``SO_RCVTIMEO``,
        re-set only when ``timeout`` differs from the last one by more than
        :data:`TIMEOUT_SLACK_S`). ``timeout <= 0`` does not block: it drains.
        """
        sock = self._sock
        if sock is None:
            raise ValueError("the doorbell is closed")
        if timeout <= 0:
            return self.drain()
        if abs(timeout - self._rcvtimeo) > TIMEOUT_SLACK_S:
            self._set_rcvtimeo(sock, timeout)
        try:
            self._recv_into(self._view)
        except BlockingIOError:  # SO_RCVTIMEO expired (EAGAIN)
            return None
        return BELL.unpack_from(self._buf)[0]

    def _set_rcvtimeo(self, sock: socket.socket, timeout: float) -> None:
        usec = max(1, round(timeout * 1e6))  # 0 would mean "block forever"
        for tv in self._timevals:
            try:
                sock.setsockopt(
                    socket.SOL_SOCKET,
                    socket.SO_RCVTIMEO,
                    tv.pack(usec // 1_000_000, usec % 1_000_000),
                )
            except OSError as exc:
                err = exc
                continue
            self._timevals = (tv,)
            self._rcvtimeo = usec / 1e6
            return
        raise OSError(f"cannot set SO_RCVTIMEO on a doorbell socket: {err}")

    def drain(self) -> int | None:
        """Read (without waiting) every queued bell; the newest generation or None."""
        sock = self._sock
        if sock is None:
            return None
        got = 0
        recv_into, view, dontwait = self._recv_into, self._view, socket.MSG_DONTWAIT
        while True:
            try:
                got = recv_into(view, 0, dontwait)
            except BlockingIOError:
                break
        if not got:
            return None
        return BELL.unpack_from(self._buf)[0]

    def close(self) -> None:
        """Unsubscribe (best effort) and close the socket (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.sendto(UNSUBSCRIBE + self.stream.encode(), socket.MSG_DONTWAIT, self._ctl)
        sock.close()

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
