"""In-process LSL reader with a ring buffer: the Dareplane ``StreamWatcher``.

Same attributes and methods as dareplane-utils' ``StreamWatcher`` so a module can
switch by changing its import, built on :mod:`dpshm.lsl` and
:class:`~dpshm.dareplane.ringbuffer.RingBuffer`. Differences from the original: a finite
resolve timeout, selection by name/type/source_id with an ambiguity error,
channel labels from metadata, every LSL format incl. strings, ``curr_i`` (and
``buffer``, ``buffer_t``, ``last_t``) always current, and ``n_new`` clipped to
the buffer size with the excess counted in ``n_new_clipped``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dpshm._logging import library_logger
from dpshm.dareplane.logs import protect
from dpshm.dareplane.ringbuffer import RingBuffer
from dpshm.errors import DpshmError
from dpshm.lsl import Inlet, StreamSpec, find_stream, info_to_dict, resolve_streams

_logger = library_logger(__name__)

__all__ = [
    "StreamWatcher",
    "StreamWatcherNotConnected",
    "get_channel_names",
    "get_streams_names",
    "pylsl_xmlelement_to_dict",
]

#: Ring size (samples) for irregular streams (nominal rate 0), as in dareplane-utils.
IRREGULAR_BUFFER_SAMPLES = 1000
#: Rows pulled per LSL call for string streams (pylsl's cost grows with it).
STRING_CHUNK_SAMPLES = 1024
#: Upper bound on pulls per update() (each drains up to chunk_buffer_size rows).
_MAX_PULLS_PER_UPDATE = 64


class StreamWatcherNotConnected(DpshmError, ValueError):
    """The StreamWatcher was used before :meth:`StreamWatcher.connect_to_stream`."""


def get_streams_names(timeout: float = 1.0) -> list[str]:
    """Names of all LSL streams visible within ``timeout`` seconds."""
    return [s.name for s in resolve_streams(timeout)]


def pylsl_xmlelement_to_dict(inf: Any) -> dict[str, Any]:
    """A ``pylsl.StreamInfo`` as a nested dict ``{"info": {...}}`` (dareplane-utils name).

    Modules use it as ``pylsl_xmlelement_to_dict(sw.inlet.info())["info"]["nominal_srate"]``.
    """
    return info_to_dict(inf)


def get_channel_names(inf: Any) -> list[str]:
    """Channel labels of a ``pylsl.StreamInfo`` (``ch_<i>`` where missing), as the original."""
    return list(StreamSpec.from_info(inf).channel_names)


def _ring_attr(attr: str, empty: Any, doc: str) -> property:
    """A StreamWatcher attribute that follows ``ring_buffer.<attr>`` (always current).

    The original's ``buffer``, ``buffer_t``, ``curr_i`` and ``last_t`` are plain
    attributes, and modules re-link them after replacing ``ring_buffer``
    (``sw.buffer = sw.ring_buffer.buffer``): assigning the ring's own value keeps
    the attribute live; assigning anything else pins that value, as in the original.
    """

    def fget(self: StreamWatcher) -> Any:
        if attr in self._pinned:
            return self._pinned[attr]
        rb = self.ring_buffer
        return empty if rb is None else getattr(rb, attr)

    def fset(self: StreamWatcher, value: Any) -> None:
        rb = self.ring_buffer
        if rb is not None:
            own = getattr(rb, attr)
            if value is own or (
                not isinstance(own, np.ndarray)
                and not isinstance(value, np.ndarray)
                and value == own
            ):
                self._pinned.pop(attr, None)
                return
        self._pinned[attr] = value

    return property(fget, fset, doc=doc)


class StreamWatcher:
    """Watch one LSL stream and keep its newest samples in a ring buffer.

    Parameters
    ----------
    name : str
        Name of the LSL stream to watch (may be empty when ``stream_type`` or
        ``source_id`` selects the stream).
    buffer_size_s : float
        Ring size in seconds of the nominal rate. Irregular streams get
        ``irregular_buffer_samples`` samples instead.
    logger : logging.Logger, optional
        Logger for this watcher (default: ``dpshm.dareplane.watcher``).
    stream_type, source_id : str, optional
        Further selection criteria (all given ones must match).
    resolve_timeout : float
        Longest wait (s) for the stream in :meth:`connect_to_stream`.
    irregular_buffer_samples : int
        Ring size (samples) for irregular streams.
    recover : bool
        Reconnect silently when the outlet comes back with the same source_id
        (see :class:`~dpshm.lsl.Inlet`).

    Attributes
    ----------
    n_new : int
        Samples received since the user last reset it to 0, clipped to the ring
        size: older ones are already overwritten.
    n_new_clipped : int
        Samples that arrived but were overwritten before being counted in
        ``n_new`` (a warning is logged the first time).
    samples, times : np.ndarray
        The samples/timestamps received by the last :meth:`update` that pulled
        data (views into the ring; valid until the next update).
    channel_names : list of str
        From the stream's metadata, ``ch_1..`` where missing.
    chunk_buffer_size : int
        Most rows pulled from LSL per call (set before connecting).
    streams : list of pylsl.StreamInfo
        The connected stream's full info (as in the original), after connecting.
    spec : dpshm.lsl.StreamSpec or None
        The same as a :class:`~dpshm.lsl.StreamSpec` (name, srate, channel names...).
    """

    inlet: Inlet | None = None
    ring_buffer: RingBuffer | None = None

    def __init__(
        self,
        name: str = "",
        buffer_size_s: float = 2,
        logger: logging.Logger | None = None,
        *,
        stream_type: str | None = None,
        source_id: str | None = None,
        resolve_timeout: float = 5.0,
        irregular_buffer_samples: int = IRREGULAR_BUFFER_SAMPLES,
        recover: bool = True,
    ) -> None:
        if not buffer_size_s > 0:
            raise ValueError(f"buffer_size_s must be > 0 seconds, got {buffer_size_s!r}")
        if int(irregular_buffer_samples) < 1:
            raise ValueError(
                f"irregular_buffer_samples must be >= 1, got {irregular_buffer_samples!r}"
            )
        self.name = name
        self.buffer_size_s = buffer_size_s
        self.stream_type = stream_type
        self.source_id = source_id
        self.resolve_timeout = resolve_timeout
        self.irregular_buffer_samples = int(irregular_buffer_samples)
        self.recover = recover
        self.chunk_buffer_size = 1024 * 32
        # a module's logger: dpshm's records through it stay readable by every receiver
        self.logger = protect(logger) if logger is not None else _logger
        self.streams: list[Any] = []  # pylsl.StreamInfo, as the original
        self.spec: StreamSpec | None = None
        self.stream = None  # unused; kept because the original has it
        self.channel_names: list[str] = []
        self._last_k = 0  # rows received by the last update that pulled data
        self._samples: Any = None  # explicit override (assigned by the user)
        self._pinned: dict[str, Any] = {}  # buffer/buffer_t/curr_i/last_t set by the user
        self._times: Any = None
        self.n_new = 0
        self.n_new_clipped = 0
        self._warned_clip = False

    # -- connection --------------------------------------------------------------------

    def connect_to_stream(self, identifier: dict | None = None, timeout: float | None = None):
        """Resolve the stream, open an inlet and allocate the ring buffer.

        Parameters
        ----------
        identifier : dict, optional
            ``{"name": ..., "type": ..., "source_id": ...}`` (any subset); given
            keys override the constructor's. ``name`` also becomes ``self.name``.
        timeout : float, optional
            Resolve timeout (s); ``resolve_timeout`` by default.

        Raises
        ------
        StreamNotFoundError, AmbiguousStreamError
            From :func:`dpshm.lsl.find_stream`; the messages list the streams.
            The same message is logged at ERROR through ``logger`` first (the
            original waited for ever; a module's log then says why it stopped).
        """
        ident = dict(identifier or {})
        if "name" in ident:
            self.name = ident["name"]
        stream_type = ident.get("type", self.stream_type)
        source_id = ident.get("source_id", self.source_id)
        if not (self.name or stream_type or source_id):
            raise ValueError(
                "StreamWatcher has no stream to look for; give a name (or stream_type / "
                "source_id), e.g. StreamWatcher('eeg')"
            )
        self.disconnect()
        try:
            spec = find_stream(
                name=self.name or None,
                type=stream_type,
                source_id=source_id,
                timeout=self.resolve_timeout if timeout is None else timeout,
            )
        except DpshmError as err:
            # the original waited for ever; say it where the control room reads it
            self.logger.error("StreamWatcher %r cannot connect: %s", self.name, err)
            raise
        inlet = Inlet(spec, recover=self.recover)
        try:
            self._init_buffer(inlet.spec)
        except BaseException:
            inlet.close()
            raise
        self.inlet = inlet
        self.spec = inlet.spec
        # pylsl objects, as in the original (modules call streams[0].nominal_srate())
        self.streams = [inlet.spec.info]
        self.logger.debug("connected to LSL stream %s", inlet.spec.describe())
        self.update()

    def _init_buffer(self, spec: StreamSpec) -> None:
        if spec.is_irregular:
            n_samples = self.irregular_buffer_samples
        else:
            n_samples = max(1, round(spec.srate * self.buffer_size_s))
        self.channel_names = list(spec.channel_names)
        self.ring_buffer = RingBuffer((n_samples, spec.n_channels), dtype=spec.dtype)
        rows = self.chunk_buffer_size
        if spec.is_string:
            rows = min(rows, STRING_CHUNK_SAMPLES)
        self.chunk_buffer = np.zeros((max(1, rows), spec.n_channels), dtype=spec.dtype)
        self._chunk_t = np.zeros(len(self.chunk_buffer), dtype=np.float64)
        self._last_k = 0
        self._samples = self._times = None
        self._pinned.clear()
        self.n_new = 0
        self.n_new_clipped = 0

    def disconnect(self) -> None:
        """Close the inlet (idempotent); the ring buffer keeps its contents."""
        inlet, self.inlet = self.inlet, None
        if inlet is not None:
            self.logger.info("Disconnecting from LSL stream %s", inlet.spec.describe())
            inlet.close()

    close = disconnect

    def __enter__(self) -> StreamWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # -- reading -----------------------------------------------------------------------

    def _ring(self) -> RingBuffer:
        if self.ring_buffer is None:
            raise StreamWatcherNotConnected(
                f"StreamWatcher {self.name!r} is not connected; call connect_to_stream() first"
            )
        return self.ring_buffer

    def update(self) -> int:
        """Move every queued sample from LSL into the ring buffer (never blocks).

        Returns
        -------
        int
            Number of samples received by this call.

        Raises
        ------
        StreamWatcherNotConnected
            Before :meth:`connect_to_stream` or after :meth:`disconnect`.
        StreamLostError
            The outlet is gone and cannot be recovered.
        """
        ring = self._ring()
        if self.inlet is None:
            raise StreamWatcherNotConnected(
                f"StreamWatcher {self.name!r} was disconnected; call connect_to_stream() again"
            )
        chunk, chunk_t = self.chunk_buffer, self._chunk_t
        total = 0
        for _ in range(_MAX_PULLS_PER_UPDATE):
            n = self.inlet.pull_into(chunk, chunk_t)
            if n:
                ring.add_samples(chunk[:n], chunk_t[:n])
                total += n
            if n < len(chunk):
                break
        if total:
            self._last_k = min(total, ring.capacity)
            self._samples = self._times = None
            self._count_new(total, ring.capacity)
        return total

    @property
    def samples(self) -> np.ndarray:
        """Samples received by the last :meth:`update` that pulled data (oldest first).

        A view into the ring (valid until the next update); at most the ring size.
        """
        if self._samples is not None:
            return self._samples
        if self.ring_buffer is None:
            return np.array([])
        return self.ring_buffer.view(self._last_k)

    @samples.setter
    def samples(self, value: Any) -> None:
        self._samples = value

    @property
    def times(self) -> np.ndarray:
        """Timestamps belonging to :attr:`samples`."""
        if self._times is not None:
            return self._times
        if self.ring_buffer is None:
            return np.array([])
        return self.ring_buffer.view_t(self._last_k)

    @times.setter
    def times(self, value: Any) -> None:
        self._times = value

    #: dareplane-utils names of the per-format update methods (one method here).
    update_numeric = update
    update_char_p = update

    def _count_new(self, n: int, capacity: int) -> None:
        self.n_new += n
        if self.n_new > capacity:
            self.n_new_clipped += self.n_new - capacity
            self.n_new = capacity
            log = self.logger.debug if self._warned_clip else self.logger.warning
            self._warned_clip = True
            log(
                "StreamWatcher %r: more new samples than the buffer holds (%d); n_new "
                "clipped, %d overwritten so far (n_new_clipped). Reset n_new after "
                "reading or enlarge buffer_size_s.",
                self.name,
                capacity,
                self.n_new_clipped,
            )

    # -- buffer access (always current) ------------------------------------------------

    buffer = _ring_attr(
        "buffer",
        np.array([]),
        "Ring data in storage order (see :class:`~dpshm.dareplane.ringbuffer.RingBuffer`).",
    )
    buffer_t = _ring_attr("buffer_t", np.array([]), "Ring timestamps in storage order.")
    curr_i = _ring_attr("curr_i", 0, "Row the next sample goes to; always current.")
    last_t = _ring_attr("last_t", 0, "Timestamp of the newest sample.")

    def unfold_buffer(self) -> np.ndarray:
        """Copy of the ring data in chronological order (newest last)."""
        return self._ring().unfold_buffer()

    def unfold_buffer_t(self) -> np.ndarray:
        """Copy of the ring timestamps in chronological order (newest last)."""
        return self._ring().unfold_buffer_t()

    def get_streams_names(self, timeout: float = 1.0) -> list[str]:
        """Names of all visible LSL streams (see :func:`get_streams_names`)."""
        return get_streams_names(timeout)

    def __repr__(self) -> str:
        state = "connected" if self.inlet is not None else "not connected"
        return f"<StreamWatcher {self.name!r} {state}>"
