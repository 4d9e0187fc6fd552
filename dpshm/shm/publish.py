"""Publish a stream from any process: :func:`publish_stream` and :class:`StreamPublisher`.

The publishing process (the *producer*) is its ring's one writer: it creates
the ring, writes every chunk into it and wakes the consumers itself (its own
doorbell server and ZeroMQ head publisher, whose endpoints the registry lists
with the stream), so a published stream costs its readers exactly what a stream
fed from LSL costs them, and adds no hop through the supervisor. The running
supervisor (``dpshm up``) only lists the stream (:mod:`dpshm.shm.derived`):
``SharedStreamView(name)`` then finds it from any process, ``dpshm ls`` shows
it with the producer's pid.

Life of a published stream:

* :meth:`StreamPublisher.close` (or leaving the ``with`` block) flags the ring
  stale, tells the supervisor and unlinks the ring; attached readers keep
  their mapping and see ``stale``.
* A producer that exits or is killed without closing: the supervisor sees its
  request connection end, flags the ring stale and unlinks it once the pid is
  dead (the one case where not the creator unlinks).
* Publishing again under the same name (and source_id) gets the same registry
  key; views following the stream re-attach to the new ring and read it from
  its first sample. Same format: same generation; another format: the next.
* A supervisor restart: the producer keeps writing (views already attached go
  on reading) and registers its ring with the next supervisor of the namespace.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dpshm._logging import library_logger
from dpshm._threads import join_thread
from dpshm.config import (
    DEFAULT_BUFFER_S,
    DEFAULT_IRREGULAR_SAMPLES,
    DEFAULT_STRING_WIDTH,
    namespace_from_env,
    validate_namespace,
)
from dpshm.errors import DpshmError, StreamNameTakenError, SupervisorNotRunningError
from dpshm.formats import resolve_format
from dpshm.shm import doorbell, registry
from dpshm.shm.bus import HeadPublisher
from dpshm.shm.requests import RequestClient
from dpshm.shm.ring import SharedRing

log = library_logger(__name__)

WATCH_S = 0.25  # how often the producer's thread looks at its supervisor connection
RETRY_S = 0.5  # how often it tries to register with a (re)started supervisor
JOIN_TIMEOUT_S = 2.0
RESERVED_META = ("namespace", "key", "producer")
#: ``<desc>`` element marking the LSL mirror of a published stream.
MIRROR_DESC = "dpshm_published"


def publish_stream(
    name: str,
    n_channels: int,
    rate: float,
    dtype: Any = "float32",
    channel_names: Sequence[str] | None = None,
    type: str = "",
    lsl: bool = False,
    *,
    source_id: str | None = None,
    buffer_s: float | None = None,
    capacity: int | None = None,
    namespace: str | None = None,
    string_width: int = DEFAULT_STRING_WIDTH,
    meta: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> StreamPublisher:
    """Publish a stream into shared memory, listed by the running supervisor.

    Parameters
    ----------
    name : str
        Stream name; readers open it with ``SharedStreamView(name)``. A name
        another stream holds (fed from LSL, or published by a live process)
        is refused.
    n_channels : int
        Channels per sample.
    rate : float
        Nominal sampling rate in Hz; 0.0 for an irregular stream (markers).
    dtype : str or numpy dtype
        Channel format: ``"float32"``, ``"double64"``/``"float64"``, ``"int32"``,
        ``"int16"``, ``"int8"``, ``"int64"`` or ``"string"`` (markers).
    channel_names : sequence of str, optional
        One label per channel (default ``ch_1 ... ch_n``).
    type : str
        Content type, as LSL's (``"EEG"``, ``"Markers"``, ...).
    lsl : bool
        Also offer the stream as an LSL outlet (same name, channels, rate,
        source_id and timestamps), for LabRecorder, other hosts or unmodified
        Dareplane modules. The supervisor does not read this mirror back.
    source_id : str, optional
        Identity of the stream (default ``"dpshm:<namespace>:<name>"``): a
        producer publishing again with the same name and source_id continues
        the same stream.
    buffer_s : float, optional
        Ring length in seconds (regular streams; default 10 s).
    capacity : int, optional
        Ring length in samples (overrides ``buffer_s``; irregular streams
        default to 4096).
    namespace : str, optional
        Supervisor namespace (default ``$DPSHM_NAMESPACE`` or ``"default"``).
    string_width : int
        Bytes per marker slot (string streams).
    meta : mapping, optional
        JSON-serialisable metadata stored in the ring (``view.meta``); the
        keys ``namespace``, ``key`` and ``producer`` are dpshm's.
    timeout : float
        Longest wait for each of the supervisor's replies.

    Returns
    -------
    StreamPublisher
        Call :meth:`~StreamPublisher.push_chunk`; close it (or use ``with``).

    Raises
    ------
    SupervisorNotRunningError
        No supervisor runs on the namespace (start one with ``dpshm up``).
    StreamNameTakenError
        Another stream holds ``name``.
    ValueError
        A bad format, size or metadata.

    Examples
    --------
    >>> with dpshm.publish_stream("eeg_filtered", 64, 1000.0) as pub:  # doctest: +SKIP
    ...     pub.push_chunk(filtered, timestamps=ts)
    """
    return StreamPublisher(
        name,
        n_channels,
        rate,
        dtype,
        channel_names,
        type,
        lsl,
        source_id=source_id,
        buffer_s=buffer_s,
        capacity=capacity,
        namespace=namespace,
        string_width=string_width,
        meta=meta,
        timeout=timeout,
    )


def _capacity(rate: float, buffer_s: float | None, capacity: int | None) -> int:
    if capacity is not None:
        if (
            not isinstance(capacity, (int, np.integer))
            or isinstance(capacity, bool)
            or capacity < 1
        ):
            raise ValueError(f"capacity must be a positive number of samples, got {capacity!r}")
        return int(capacity)
    if rate <= 0:
        return DEFAULT_IRREGULAR_SAMPLES
    seconds = DEFAULT_BUFFER_S if buffer_s is None else buffer_s
    if not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"buffer_s must be a positive number of seconds, got {buffer_s!r}")
    return max(1, round(seconds * rate))


class StreamPublisher:
    """Writer of one published stream; create it with :func:`publish_stream`.

    ``push_chunk`` / ``push_sample`` write into the ring and wake the
    consumers; :meth:`close` ends the stream (idempotent, also on ``with``
    exit). Not thread-safe: push from one thread.

    Attributes
    ----------
    name, key : str
        Stream name and registry key.
    ring : SharedRing
        The ring (owned: this publisher is its writer).
    generation : int
    head : int
        Samples pushed so far into this ring.
    """

    _ring: SharedRing | None = None
    _bell: doorbell.DoorbellServer | None = None
    _heads: HeadPublisher | None = None
    _outlet: Any = None
    _client: RequestClient | None = None
    _watcher: threading.Thread | None = None
    closed = True

    def __init__(
        self,
        name: str,
        n_channels: int,
        rate: float,
        dtype: Any = "float32",
        channel_names: Sequence[str] | None = None,
        type: str = "",
        lsl: bool = False,
        *,
        source_id: str | None = None,
        buffer_s: float | None = None,
        capacity: int | None = None,
        namespace: str | None = None,
        string_width: int = DEFAULT_STRING_WIDTH,
        meta: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not rate >= 0:
            raise ValueError(f"rate must be a number >= 0 (0 = irregular), got {rate!r}")
        self.namespace = (
            namespace_from_env() if namespace is None else validate_namespace(namespace)
        )
        self.name = name
        self.type = type
        self.rate = float(rate)
        self.format = resolve_format(dtype)
        self.n_channels = n_channels
        self.source_id = source_id or f"dpshm:{self.namespace}:{name}"
        self._capacity = _capacity(self.rate, buffer_s, capacity)
        self._channel_names = None if channel_names is None else [str(c) for c in channel_names]
        self._string_width = string_width
        self._user_meta = dict(meta or {})
        if clash := [k for k in RESERVED_META if k in self._user_meta]:
            raise ValueError(f"meta keys {clash} are dpshm's; rename them")
        self._timeout = timeout
        self._lsl = bool(lsl)
        self._back: np.ndarray = np.empty(0)  # (k-1 .. 0) / rate, for default timestamps
        self._closing = threading.Event()
        self.closed = False
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- registration -------------------------------------------------------------------
    def _connect(self) -> RequestClient:
        try:
            reg = registry.read_registry(self.namespace)
        except SupervisorNotRunningError as exc:
            raise SupervisorNotRunningError(f"cannot publish stream {self.name!r}: {exc}") from None
        path = reg.endpoints.get("requests")
        if not path:
            raise SupervisorNotRunningError(
                f"cannot publish stream {self.name!r}: the supervisor of namespace "
                f"{self.namespace!r} (pid {reg.pid}) takes no publishers; restart it with "
                "this dpshm version"
            )
        return RequestClient(path, self._timeout)

    def _ask(self, client: RequestClient, request: dict[str, Any]) -> dict[str, Any]:
        reply = client.ask(request)
        if not reply.get("ok"):
            msg = f"cannot publish stream {self.name!r}: {reply.get('error')}"
            if reply.get("kind") == "name_taken":
                raise StreamNameTakenError(msg)
            raise DpshmError(msg)
        return reply

    def _claim(self, client: RequestClient, ring: SharedRing | None) -> dict[str, Any]:
        req: dict[str, Any] = {
            "op": "claim",
            "name": self.name,
            "type": self.type,
            "source_id": self.source_id,
            "hostname": socket.gethostname(),
            "channels": int(self.n_channels),
            "format": self.format,
            "srate": self.rate,
            "capacity": self._capacity,
        }
        if ring is not None:
            req.update(ring=ring.name, generation=ring.generation)
        return self._ask(client, req)

    def _open(self) -> None:
        client = self._client = self._connect()
        reply = self._claim(client, None)
        self.key, self.generation = str(reply["key"]), int(reply["generation"])
        token = f"{os.getpid():x}{os.urandom(3).hex()}"
        meta = {
            **self._user_meta,
            "namespace": self.namespace,
            "key": self.key,
            "producer": {
                "pid": os.getpid(),
                "name": self.name,
                "type": self.type,
                "source_id": self.source_id,
                "lsl": self._lsl,
            },
        }
        self._ring = SharedRing.create(
            str(reply["ring"]),
            self.n_channels,
            self._capacity,
            self.format,
            srate=self.rate,
            channel_names=self._channel_names,
            meta=meta,
            string_width=self._string_width,
            generation=self.generation,
        )
        if doorbell.AVAILABLE:
            self._bell = doorbell.DoorbellServer(f"dpshm-{os.getuid()}-{self.namespace}-p{token}")
        if reply.get("transport") == "tcp":
            endpoint = "tcp://127.0.0.1:*"
        else:
            endpoint = f"ipc://{registry.namespace_dir(self.namespace)}/heads-{token}.ipc"
        self._heads = HeadPublisher(endpoint)
        if self._lsl:
            self._outlet = self._mirror()
        self._ready(client)
        self._watcher = threading.Thread(
            target=self._watch, name=f"dpshm-publish-{self.name}", daemon=True
        )
        self._watcher.start()
        log.info(
            "publishing %r (%d ch %s @ %g Hz) into ring %r%s",
            self.name, self.n_channels, self.format, self.rate, self._ring.name,
            " and an LSL outlet" if self._outlet is not None else "",
        )  # fmt: skip

    def _ready(self, client: RequestClient) -> None:
        endpoints = {"heads": self._heads.endpoint} if self._heads is not None else {}
        if self._bell is not None:
            endpoints["doorbell"] = self._bell.address
        self._ask(client, {"op": "ready", "key": self.key, "endpoints": endpoints})

    def _mirror(self) -> Any:
        from dpshm import lsl

        ring = self.ring
        return lsl.Outlet(
            self.name,
            self.type,
            self.n_channels,
            self.rate,
            self.format,
            source_id=self.source_id,
            channel_names=ring.channel_names,
            desc={MIRROR_DESC: {"namespace": self.namespace, "key": self.key,
                                "pid": os.getpid()}},
        )  # fmt: skip

    def _watch(self) -> None:
        """Notice a supervisor that ended; register the ring with the next one."""
        while not self._closing.is_set():
            client = self._client
            if client is not None:
                if not client.wait_closed(WATCH_S) or self._closing.is_set():
                    continue
                log.warning(
                    "stream %r: the supervisor ended; attached views keep reading, and the "
                    "stream is registered again when a supervisor runs",
                    self.name,
                )
                self._client = None
                client.close()
                continue
            if self._closing.wait(RETRY_S):
                return
            try:
                client = self._connect()
            except (SupervisorNotRunningError, OSError):
                continue
            try:
                self._claim(client, self._ring)
                self._ready(client)
            except (DpshmError, OSError) as exc:
                log.warning("stream %r: registering again failed: %s", self.name, exc)
                client.close()
                continue
            self._client = client
            if self._closing.is_set():  # close() ran meanwhile and saw no connection
                self._client = None
                client.close()
                return
            ring = self._ring
            if ring is not None:  # the supervisor flagged it when the connection ended
                ring.set_stale(False)
            log.info("stream %r registered with the supervisor again", self.name)

    # -- writing ------------------------------------------------------------------------
    @property
    def ring(self) -> SharedRing:
        """The ring this publisher writes (raises once closed)."""
        ring = self._ring
        if ring is None or self.closed:
            raise ValueError(f"the publisher of stream {self.name!r} is closed")
        return ring

    @property
    def outlet(self) -> Any:
        """The LSL mirror (a :class:`dpshm.lsl.Outlet`), or None without ``lsl=True``."""
        return self._outlet

    @property
    def head(self) -> int:
        """Samples written into the ring so far."""
        return self.ring.head

    def _default_timestamps(self, k: int) -> np.ndarray:
        from dpshm.lsl import local_clock

        now = local_clock()
        if self.rate <= 0:
            return np.full(k, now)
        back = self._back
        if len(back) != k:
            back = self._back = np.arange(k - 1, -1, -1, dtype=np.float64) / self.rate
        return now - back

    def push_chunk(self, data: Any, timestamps: Any = None) -> int:
        """Append ``k`` samples and wake the consumers; returns the new head.

        Parameters
        ----------
        data : array_like, shape (k, n_channels)
            One row per sample (``str`` values for string streams). Numeric
            data is stored as the stream's dtype (see :meth:`SharedRing.write`).
        timestamps : array_like, shape (k,), optional
            LSL timestamps (seconds, :func:`dpshm.lsl.local_clock`'s time base).
            Default: the newest sample is stamped now and the others evenly
            spaced back from it by ``1 / rate`` (all now for irregular streams).

        Raises
        ------
        ValueError
            Wrong shape, a dtype that cannot be stored without loss, wrong
            timestamp count, or the publisher is closed.
        """
        ring = self.ring
        k = len(data)
        if timestamps is None:
            timestamps = self._default_timestamps(k)
        head = ring.write(data, timestamps)
        if not k:
            return head
        bell, heads = self._bell, self._heads
        if bell is not None:
            bell.ring(self.key, self.generation)
        if heads is not None:
            heads.publish(self.key, head, self.generation, float(timestamps[-1]))
        outlet = self._outlet
        if outlet is not None:
            outlet.push_chunk(data, np.asarray(timestamps, dtype=np.float64).tolist())
        return head

    def push_sample(self, sample: Any, timestamp: float | None = None) -> int:
        """Append one sample (one value per channel); see :meth:`push_chunk`."""
        return self.push_chunk([sample], None if timestamp is None else [timestamp])

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """End the stream: stale for its readers, unlisted as live, ring unlinked.

        Idempotent. Attached readers keep their mapping (and see ``stale``).
        """
        if self.closed and self._ring is None and self._client is None:
            return
        self.closed = True
        self._closing.set()
        ring = self._ring
        if ring is not None:
            ring.set_stale()
        client, self._client = self._client, None
        if client is not None and ring is not None:
            with contextlib.suppress(DpshmError, OSError, ValueError):
                client.ask({"op": "close", "key": self.key})
        watcher, self._watcher = self._watcher, None
        if client is not None:
            client.close()
        if watcher is not None and watcher is not threading.current_thread():
            join_thread(watcher, JOIN_TIMEOUT_S)
        for attr in ("_outlet", "_heads", "_bell"):
            obj = getattr(self, attr)
            setattr(self, attr, None)
            if obj is not None:
                obj.close()
        self._ring = None
        if ring is not None:
            ring.unlink()
            ring.close()

    def __enter__(self) -> StreamPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<StreamPublisher {self.name!r} closed>"
        return f"<StreamPublisher {self.name!r} ring={self.ring.name!r} head={self.head}>"
