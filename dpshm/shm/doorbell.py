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
subscribing twice is harmless.

Who may subscribe
-----------------
An abstract socket has no file permissions: any local process can send to it.
The control socket therefore sets ``SO_PASSCRED``, and the kernel attaches the
sender's credentials (``SCM_CREDENTIALS``: pid, uid, gid; only root can send
other values) to every datagram. A message whose uid is not the supervisor's
own is dropped (counted in :attr:`DoorbellServer.refused`, logged at most once
per :data:`LOG_EVERY_S`). (``SO_PEERCRED`` is for connected sockets; a datagram
socket has no peer, so the credentials come with each message.) Subscriptions
are bounded: at most ``max_subscribers`` over all streams, and only for streams
the supervisor shares (``accept``); one over the limit is dropped and logged
(rate-limited). A message costs one ``recvmsg`` and a few comparisons, and
holds no memory once handled. At most :data:`MAX_MESSAGES_PER_S` messages are
read a second: beyond that the control thread pauses and the kernel's short
queue makes the senders wait, so a flood costs the supervisor bounded CPU.
Subscribed consumers are rung by the feed threads, not by this thread, and keep
waking on every write; a consumer subscribing during a flood may need several
tries (it re-sends every 0.25 s and meanwhile checks the ring head itself).

Ringing
-------
After each write into a ring the feed thread rings every subscriber of that
stream with one non-blocking ``sendto`` of a 4-byte bell::

    struct "<I": the ring generation after the write

A subscriber whose address is gone (``ECONNREFUSED``: it exited or was
killed) is dropped; a full receive queue is ignored: the consumer drains its
socket and reads the ring anyway. Bells only wake consumers: data is always
read from the ring, and a consumer checks the ring head before it sleeps, so
a lost bell costs latency, never data.

Consumer (:class:`Doorbell`): autobinds one socket and *connects* it to the
supervisor's control address (a connected UNIX datagram socket receives only
from its peer: no other process, of any user, can send it fake bells), sends
``S`` to the supervisor, then :meth:`Doorbell.wait` blocks in one ``recv_into`` of one bell
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
import time
from collections.abc import Callable
from typing import Any

from dpshm._logging import library_logger
from dpshm._threads import join_thread
from dpshm._wake import Waker

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
DEFAULT_MAX_SUBSCRIBERS = 256
LOG_EVERY_S = 10.0  # refused subscriptions are logged at most this often
MAX_MESSAGES_PER_S = 4000  # control messages read per second, at most (flood bound)
_SLICE_S = 0.05
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
_CMSG_SPACE = socket.CMSG_SPACE(_UCRED.size) if hasattr(socket, "CMSG_SPACE") else 64
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
    max_subscribers : int
        Subscriptions kept over all streams; more are refused (and logged).
    accept : callable, optional
        ``stream -> bool``: only streams it accepts can be subscribed to
        (the supervisor passes "is this a stream I share"); default: any.

    Notes
    -----
    A thread (``dpshm-doorbell``) receives subscriptions; :meth:`ring` is
    called by the feed threads (thread-safe, never blocks). Only senders with
    the supervisor's own uid are heard (see the module docstring).
    """

    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None

    def __init__(
        self,
        address: str,
        *,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
        accept: Callable[[str], bool] | None = None,
    ):
        _require_available()
        if isinstance(max_subscribers, bool) or not isinstance(max_subscribers, int):
            raise TypeError(f"max_subscribers must be an int, got {max_subscribers!r}")
        if max_subscribers < 1:
            raise ValueError(f"max_subscribers must be >= 1, got {max_subscribers}")
        self.address = address
        self.max_subscribers = max_subscribers
        self._accept = accept
        self._subs: dict[str, tuple[bytes, ...]] = {}  # copy-on-write, read without lock
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.dropped = 0  # subscribers removed because their address was gone
        # messages dropped by reason; "rate": times reading paused (over MAX_MESSAGES_PER_S)
        self.refused = {"uid": 0, "full": 0, "unknown": 0, "rate": 0}
        self._uid = os.getuid()
        self._logged_at: dict[str, float] = {}
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind(_abstract(address))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"cannot bind doorbell address {address!r}: {exc}. Is another supervisor "
                "using this namespace and run id?"
            ) from None
        sock.setblocking(False)  # ring() must never wait; the control thread polls
        self._waker = Waker()
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="dpshm-doorbell", daemon=True)
        self._thread.start()

    def subscribers(self, stream: str | None = None) -> int:
        """Number of subscribers of ``stream`` (of every stream when None)."""
        if stream is None:
            return self._count
        return len(self._subs.get(stream, ()))

    def _refuse(self, reason: str, msg: str, *args: Any) -> None:
        """Count a dropped message; log it at most once per :data:`LOG_EVERY_S`."""
        self.refused[reason] += 1
        now = time.monotonic()
        if now - self._logged_at.get(reason, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged_at[reason] = now
            log.warning(msg + " (%d such so far; logged at most every %g s)",
                        *args, self.refused[reason], LOG_EVERY_S)  # fmt: skip

    @staticmethod
    def _sender_uid(ancdata: list) -> tuple[int, int] | None:
        for level, kind, data in ancdata:
            ok = level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
            if ok and len(data) >= _UCRED.size:
                pid, uid, _gid = _UCRED.unpack_from(data)
                return uid, pid
        return None

    def _serve(self) -> None:
        """Receive control messages.

        Drain what is queued, at most :data:`MAX_MESSAGES_PER_S` a second (a flood costs
        bounded CPU).
        """
        sock = self._sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._waker.fileno(), select.POLLIN)  # close() wakes the thread
        per_slice = max(1, int(MAX_MESSAGES_PER_S * _SLICE_S))
        slice_end, used = time.monotonic() + _SLICE_S, 0
        while not self._stop.is_set():
            if not poller.poll(int(RECV_TIMEOUT_S * 1000)):
                continue
            while used < per_slice:
                try:
                    msg, anc, _flags, addr = sock.recvmsg(MAX_MESSAGE, _CMSG_SPACE)
                except BlockingIOError:
                    break
                except OSError:
                    if self._stop.is_set():
                        return
                    log.exception("doorbell control socket failed")
                    return
                used += 1
                self._receive(msg, anc, addr)
            now = time.monotonic()
            if used >= per_slice and now < slice_end:  # over budget: let the queue fill
                self._refuse(
                    "rate", "doorbell: more than %d control messages/s (a flood?): reading "
                    "them more slowly; subscribed consumers keep being rung", MAX_MESSAGES_PER_S,
                )  # fmt: skip
                self._stop.wait(slice_end - now)
                now = time.monotonic()
            if now >= slice_end:
                slice_end, used = now + _SLICE_S, 0

    def _receive(self, msg: bytes, anc: list, addr: bytes) -> None:
        """One received datagram: check the sender's uid, then apply it."""
        cred = self._sender_uid(anc)
        if cred is None or cred[0] != self._uid:
            self._refuse(
                "uid", "doorbell: refused a message from uid %s (pid %s): only uid %d "
                "(the supervisor's user) may subscribe",
                *(cred or ("unknown", "unknown")), self._uid,
            )  # fmt: skip
            return
        if not msg or not addr:  # an unbound sender cannot be rung
            return
        self._handle(msg[:1], msg[1:].decode("utf-8", "replace"), addr)

    def _handle(self, kind: bytes, stream: str, addr: bytes) -> None:
        """Apply one (credential-checked) subscribe or unsubscribe message."""
        with self._lock:
            subs = self._subs.get(stream, ())
            if kind == UNSUBSCRIBE and addr in subs:
                left = tuple(a for a in subs if a != addr)
                self._set(stream, left)
                return
            if kind != SUBSCRIBE or addr in subs:
                return
            if self._accept is not None and not self._accept(stream):
                self._refuse("unknown", "doorbell: refused a subscription to %r: no such stream",
                             stream[:80])  # fmt: skip
                return
            if self._count >= self.max_subscribers:
                self._refuse(
                    "full", "doorbell: refused a subscription to %r: %d subscriptions is the "
                    "limit ([supervisor] max_subscribers / --max-subscribers)",
                    stream[:80], self.max_subscribers,
                )  # fmt: skip
                return
            self._set(stream, (*subs, addr))
            log.debug("doorbell: %r subscribed to %r", addr, stream)

    def _set(self, stream: str, subs: tuple[bytes, ...]) -> None:
        """Replace the subscribers of ``stream`` (lock held); keeps the count."""
        self._count += len(subs) - len(self._subs.get(stream, ()))
        if subs:
            self._subs[stream] = subs
        else:
            self._subs.pop(stream, None)

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
            self._set(stream, tuple(a for a in subs if a not in gone))
        self.dropped += len(gone)
        log.debug("doorbell: dropped %d dead subscriber(s) of %r", len(gone), stream)

    def close(self) -> None:
        """Stop the control thread and close the socket (idempotent)."""
        self._stop.set()
        self._waker.wake()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            join_thread(t, JOIN_TIMEOUT_S)
        self._waker.close()
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
        self._connected = False
        self.subscribed = False
        self.subscribe()

    def subscribe(self) -> bool:
        """(Re-)send the subscription; returns False if the supervisor is not reachable."""
        sock = self._sock
        if sock is None:
            return False
        try:
            if not self._connected:  # only the supervisor's socket can then send to ours
                sock.connect(self._ctl)
                self._connected = True
            # never blocks (the socket does, for recv): a full supervisor queue is retried later
            sock.send(SUBSCRIBE + self.stream.encode(), socket.MSG_DONTWAIT)
            self.subscribed = True
        except OSError as exc:  # gone (restarting) or its queue is full: retried later
            log.debug("doorbell: cannot subscribe to %r at %r: %s", self.stream, self.address, exc)
            self.subscribed = False
            if exc.errno in _GONE:  # its socket went: connect afresh next time
                self._connected = False
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
        if self._connected:
            with contextlib.suppress(OSError):
                sock.send(UNSUBSCRIBE + self.stream.encode(), socket.MSG_DONTWAIT)
        sock.close()

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
