r"""The ZeroMQ bus: head-update notifications and JSON log records.

This is the only module that imports ``zmq`` and ``msgpack``.

Head updates (PUB/SUB, endpoint ``heads``)
------------------------------------------
After each write into a ring the supervisor publishes one single-frame message::

    b"h" + <stream key, UTF-8> + b"\0" + msgpack({
        "stream": str,       # registry key of the stream
        "head": int,         # ring head after the write (total samples written)
        "generation": int,   # ring generation (bumped when the format changes)
        "timestamp": float,  # LSL timestamp of the newest sample (as sent)
    })

The prefix lets a subscriber filter on one stream (ZeroMQ filters on the
publisher side). While nobody subscribes, the publisher (an XPUB socket that
reads its subscriptions every 50 ms) sends nothing. Notifications only wake
consumers: data is always read from the ring, so a lost notification costs
latency, never data. Subscribers drain every queued notification on each wake
and keep only the newest per stream; a subscriber of a single stream sets
``ZMQ_CONFLATE`` so ZeroMQ keeps only the newest for it.

Log records (PUB/SUB, endpoint ``logs``)
----------------------------------------
One frame per record: ``b"l\\0" + JSON`` where the JSON object is
:func:`dpshm.dareplane.logrecord.record_to_dict` of the ``logging.LogRecord`` (the
Dareplane wire form: ``name``, ``msg`` = the formatted text, ``args`` = ``[]``,
``levelname``, ``created``, ...; read one back with
:func:`dpshm.dareplane.logrecord.dict_to_record`).

Endpoints are ``ipc://<runtime dir>/<namespace>/{heads,logs}.ipc`` by default;
``tcp://127.0.0.1:*`` binds an ephemeral port (read back with ``.endpoint``).
Sockets use the process-wide ``zmq.Context.instance()`` unless a context is
passed; this module never terminates a context it did not create.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgpack
import zmq

from dpshm._logging import library_logger
from dpshm.errors import ProtocolError

log = library_logger(__name__)

HEAD_PREFIX = b"h"
LOG_PREFIX = b"l\0"
DEFAULT_HWM = 100_000
SUBSCRIPTIONS_EVERY_S = 0.05  # how often a head publisher reads its subscriptions


class HeadUpdate(NamedTuple):
    """One head-update notification (see the module docstring)."""

    stream: str
    head: int
    generation: int
    timestamp: float


def head_topic(stream: str) -> bytes:
    """Subscription prefix of one stream's head updates."""
    return HEAD_PREFIX + stream.encode() + b"\0"


def encode_head(update: HeadUpdate) -> bytes:
    """Encode a head update into its wire frame."""
    body = msgpack.packb(
        {
            "stream": update.stream,
            "head": int(update.head),
            "generation": int(update.generation),
            "timestamp": float(update.timestamp),
        }
    )
    return head_topic(update.stream) + body


def decode_head(frame: bytes) -> HeadUpdate:
    """Decode a head-update frame; raises :class:`ProtocolError` when malformed."""
    try:
        sep = frame.index(b"\0")
        d = msgpack.unpackb(frame[sep + 1 :])
        return HeadUpdate(d["stream"], int(d["head"]), int(d["generation"]), float(d["timestamp"]))
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"malformed head-update frame {frame[:40]!r}: {exc}") from None


def _context(ctx: zmq.Context | None) -> zmq.Context:
    return ctx if ctx is not None else zmq.Context.instance()


class _Endpoint:
    """Owns one socket: idempotent ``close()`` and context manager; the context is left alone."""

    _sock: zmq.Socket | None = None

    def close(self) -> None:
        """Close the socket (idempotent); an ipc:// file is removed by ZeroMQ."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Pub(_Endpoint):
    """A bound PUB (or XPUB) socket shared by several threads (sends under a lock)."""

    _kind = zmq.PUB

    def __init__(self, endpoint: str, ctx: zmq.Context | None = None, hwm: int = DEFAULT_HWM):
        self._lock = threading.Lock()
        sock = _context(ctx).socket(self._kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, hwm)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise OSError(
                f"cannot bind ZeroMQ endpoint {endpoint!r}: {exc}. Is another supervisor "
                "using it? Choose another namespace or transport."
            ) from None
        self.endpoint: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock

    def _send(self, frame: bytes) -> bool:
        with self._lock:
            sock = self._sock
            if sock is None:
                return False
            try:
                sock.send(frame, zmq.NOBLOCK)
                return True
            except zmq.Again:
                return False

    def close(self) -> None:
        """Close the socket (idempotent), never while another thread sends."""
        with self._lock:
            super().close()


class HeadPublisher(_Pub):
    """Publishes head updates; safe to call from several writer threads.

    An XPUB socket: it reads the subscriptions (at most every
    :data:`SUBSCRIPTIONS_EVERY_S`, from :meth:`publish`) and, while nobody
    subscribes, skips encoding and sending -- what a PUB socket would drop
    anyway. A new subscriber gets updates within that interval.
    """

    _kind = zmq.XPUB

    def __init__(self, endpoint: str, ctx: zmq.Context | None = None, hwm: int = DEFAULT_HWM):
        super().__init__(endpoint, ctx, hwm)
        self._topics: set[bytes] = set()  # subscribed prefixes (XPUB reports first/last)
        self._next_check = 0.0

    @property
    def subscribed(self) -> bool:
        """True while at least one subscriber listens to some head updates."""
        self._read_subscriptions()
        return bool(self._topics)

    def _read_subscriptions(self) -> None:
        with self._lock:
            sock = self._sock
            if sock is None:
                return
            self._next_check = time.monotonic() + SUBSCRIPTIONS_EVERY_S
            while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                msg = sock.recv(zmq.NOBLOCK)
                if msg[:1] == b"\x01":
                    self._topics.add(msg[1:])
                elif msg[:1] == b"\x00":
                    self._topics.discard(msg[1:])

    def publish(self, stream: str, head: int, generation: int, timestamp: float) -> bool:
        """Send one update; returns False if it was not sent.

        Not sent: nobody subscribed, closed, or queue full.
        """
        if time.monotonic() >= self._next_check:
            self._read_subscriptions()
        if not self._topics:
            return False
        return self._send(encode_head(HeadUpdate(stream, head, generation, timestamp)))


class LogPublisher(_Pub):
    """Publishes JSON log records; :meth:`handler` returns a logging handler."""

    def publish_record(self, record_dict: dict[str, Any]) -> bool:
        """Send one record (a dict from ``record_to_dict``)."""
        return self._send(LOG_PREFIX + json.dumps(record_dict, default=str).encode())

    def handler(self, level: int = logging.NOTSET) -> ZmqLogHandler:
        """A :class:`logging.Handler` that publishes through this socket."""
        return ZmqLogHandler(self, level)


class ZmqLogHandler(logging.Handler):
    """Logging handler publishing each record as Dareplane JSON on the bus.

    Never blocks: a record that cannot be queued is dropped and counted in
    ``dropped``.
    """

    def __init__(self, publisher: LogPublisher, level: int = logging.NOTSET):
        super().__init__(level)
        from dpshm.dareplane.logrecord import record_to_dict

        self._to_dict = record_to_dict
        self.publisher = publisher
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Publish the record; count it in ``dropped`` if it could not be sent."""
        try:
            if not self.publisher.publish_record(self._to_dict(record)):
                self.dropped += 1
        except Exception:
            self.handleError(record)


class _Sub(_Endpoint):
    """A connected SUB socket."""

    def __init__(
        self,
        endpoint: str,
        topics: Iterable[bytes],
        ctx: zmq.Context | None = None,
        conflate: bool = False,
    ):
        sock = _context(ctx).socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        if conflate:  # keep only the newest message: draining is one recv
            sock.setsockopt(zmq.CONFLATE, 1)
        else:
            sock.setsockopt(zmq.RCVHWM, DEFAULT_HWM)
        for t in topics:
            sock.setsockopt(zmq.SUBSCRIBE, t)
        sock.connect(endpoint)
        self.endpoint = endpoint
        self._sock = sock

    @property
    def socket(self) -> zmq.Socket:
        """The underlying socket (e.g. to register it with a ``zmq.Poller``)."""
        if self._sock is None:
            raise ValueError("the subscriber is closed")
        return self._sock

    def _frames(self, timeout: float | None) -> list[bytes]:
        """Wait up to ``timeout`` s (None: don't wait) and return every queued frame.

        Blocks in one ``recv`` with ``ZMQ_RCVTIMEO`` (no poller object per call),
        then drains what else is queued, checking ``ZMQ_EVENTS`` instead of
        raising ``zmq.Again`` per call: the wake path is the consumer's main cost.
        """
        sock = self.socket
        frames = []
        if timeout is not None and timeout > 0:
            sock.setsockopt(zmq.RCVTIMEO, max(1, int(timeout * 1000)))
            try:
                frames.append(sock.recv())
            except zmq.Again:
                return frames
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames.append(sock.recv(zmq.NOBLOCK))
        return frames


class HeadSubscriber(_Sub):
    """Receives head updates of some streams (all when ``streams`` is None)."""

    def __init__(
        self, endpoint: str, streams: Iterable[str] | None = None, ctx: zmq.Context | None = None
    ):
        topics = [HEAD_PREFIX] if streams is None else [head_topic(s) for s in streams]
        # one stream: only its newest notification matters, let ZeroMQ drop the others
        super().__init__(endpoint, topics, ctx, conflate=len(topics) == 1 and streams is not None)

    def wait(self, timeout: float) -> dict[str, HeadUpdate]:
        """Block up to ``timeout`` s for a notification, then drain the queue.

        Returns the newest update per stream (empty dict on timeout).
        """
        return self._latest(self._frames(timeout))

    def drain(self) -> dict[str, HeadUpdate]:
        """Return (without waiting) the newest queued update per stream."""
        return self._latest(self._frames(None))

    @staticmethod
    def _latest(frames: list[bytes]) -> dict[str, HeadUpdate]:
        """Decode only the newest frame of each stream (the topic names it)."""
        out: dict[str, HeadUpdate] = {}
        seen: set[bytes] = set()
        for f in reversed(frames):
            topic = f[: f.find(b"\0") + 1]
            if topic in seen:
                continue
            seen.add(topic)
            try:
                u = decode_head(f)
            except ProtocolError as exc:
                log.warning("%s", exc)
                continue
            out[u.stream] = u
        return out


class LogSubscriber(_Sub):
    """Receives the JSON log records published by a supervisor."""

    def __init__(self, endpoint: str, ctx: zmq.Context | None = None):
        super().__init__(endpoint, [LOG_PREFIX], ctx)

    def recv(self, timeout: float) -> list[dict[str, Any]]:
        """Wait up to ``timeout`` s; return every queued record (oldest first)."""
        out = []
        for f in self._frames(timeout):
            try:
                out.append(json.loads(f[len(LOG_PREFIX) :]))
            except ValueError:
                log.warning("malformed log frame %r", f[:40])
        return out
