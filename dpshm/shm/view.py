"""SharedStreamView: read a shared-memory ring from any process.

A drop-in for code written against Dareplane's ``StreamWatcher`` (``update()``,
``n_new``, ``unfold_buffer()``, ``unfold_buffer_t()``, ``buffer``,
``buffer_t``, ``curr_i``, ``channel_names``, ``samples``) plus zero-copy
windows (:meth:`SharedStreamView.get_window`) and exact loss accounting
(:meth:`SharedStreamView.read_new`).

What readers get
----------------
* Methods that copy (``unfold_buffer``, ``read_new``, ``update``'s ``samples``,
  ``get_window(copy=True)``) return private arrays; for string (marker) rings
  these are object arrays of ``str``.
* Zero-copy results (``get_window(copy=False)``, ``buffer``, ``buffer_t``) are
  read-only views of the shared memory; for string rings they hold the raw
  fixed-width UTF-8 ``bytes`` (numpy ``S<width>``). They are live: the writer
  overwrites a row ``capacity`` samples after it was written.
* After :meth:`SharedStreamView.close` such views stay valid (the mapping is
  released only when the last of them is garbage collected); they keep showing
  the segment's memory.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from dpshm.formats import decode_strings
from dpshm.shm.follow import StreamLink
from dpshm.shm.ring import _H_HEAD, SharedRing

logger = logging.getLogger(__name__)

_RETRIES = 3


class SharedStreamView:
    """Read-only view of the shared-memory ring ``name``.

    Parameters
    ----------
    name : str
        LSL stream name as shared by the supervisor (``dpshm up``), or a ring
        name (``"eeg"`` for the segment ``dpshm_eeg``) for rings created
        without a supervisor. A registry key or a source_id also work.
    buffer_size_s : float, optional
        Length of :meth:`unfold_buffer` in seconds (StreamWatcher's
        parameter). Defaults to the whole ring; clamped to the ring's capacity.
    source_id : str, optional
        Chooses among supervised streams sharing ``name``.
    namespace : str, optional
        Supervisor namespace (default ``$DPSHM_NAMESPACE`` or ``"default"``).

    Notes
    -----
    A supervised view follows its stream: when the supervisor bumps the
    stream's generation (its outlet came back with another format) or is
    restarted, the next :meth:`wait`, :meth:`update` or :meth:`read_new`
    re-attaches to the new ring and reads it from its first sample; no retry
    code is needed. :attr:`generation` tells which ring is attached.

    Raises
    ------
    StreamNotFoundError
        A supervisor runs but shares no such stream (the message lists them).
    AmbiguousStreamError
        Several shared streams have that name (the message lists their
        source_ids; pass ``source_id``).
    NoSupervisorError
        No supervisor runs and no ring has that name (also a
        ``RingNotFoundError`` and a ``SupervisorNotRunningError``).

    Examples
    --------
    >>> with SharedStreamView("eeg") as sv:          # doctest: +SKIP
    ...     data, ts = sv.get_window(seconds=1.0)     # zero-copy, read-only
    ...     new, new_ts, lost = sv.read_new()         # exact: what arrived since last call
    """

    _ring: SharedRing | None = None
    _link: StreamLink | None = None

    def __init__(
        self,
        name: str,
        buffer_size_s: float | None = None,
        *,
        source_id: str | None = None,
        namespace: str | None = None,
    ) -> None:
        self.name = name
        self.buffer_size_s = buffer_size_s
        self.n_new = 0
        self.lost_samples = 0
        self.skipped_samples = 0  # see next_window()
        self._win_key: tuple | None = None  # next_window()'s validated length
        self._win_n = 0
        self.samples: np.ndarray = np.empty((0, 0))
        self.times: np.ndarray = np.empty(0)
        self.last_t = 0.0
        self._link = StreamLink(name, source_id, namespace)
        try:
            self._attach(name)
        except BaseException:
            self._link.close()
            raise

    # -- attaching (one place; the supervisor layer extends it) ---------------------------
    def _attach(self, name: str) -> None:
        """Attach to stream/ring ``name`` and reset the read cursor to its current head."""
        link = self._link
        if link is None or link.name != name:  # connect_to_stream() with another name
            ns = link.namespace if link is not None else None
            if link is not None:
                link.close()
            link = self._link = StreamLink(name, namespace=ns)
        target = link.resolve()
        ring = SharedRing.attach(target.ring)
        link.attached = target.ring
        old, self._ring = self._ring, ring
        if old is not None:
            old.close()
        self._cursor = ring.head
        self.samples = np.empty((0, ring.n_channels), self._out_dtype)
        self.times = np.empty(0)
        n = ring.capacity
        if self.buffer_size_s is not None:
            want = round(self.buffer_size_s * ring.srate) if ring.srate > 0 else n
            if want > n:
                logger.warning(
                    "ring %r keeps %d samples; buffer_size_s=%s asks for %d: using %d "
                    "(create a larger ring for more)",
                    ring.name, n, self.buffer_size_s, want, n,
                )  # fmt: skip
            n = max(1, min(want, n))
        self._n_buffer = n

    @property
    def ring(self) -> SharedRing:
        """The attached :class:`~dpshm.shm.ring.SharedRing` (raises once closed)."""
        ring = self._ring
        if ring is None or ring.closed:
            raise ValueError(f"SharedStreamView {self.name!r} is closed")
        return ring

    # -- ring properties ------------------------------------------------------------------
    @property
    def _out_dtype(self) -> Any:
        ring = self._ring
        return object if ring is not None and ring.string_width else getattr(ring, "dtype", None)

    generation = property(lambda self: self.ring.generation, doc="Ring generation.")
    stale = property(lambda self: self.ring.stale, doc="True once the source is gone.")
    head = property(lambda self: self.ring.head, doc="Total samples ever written.")
    capacity = property(lambda self: self.ring.capacity, doc="Samples kept by the ring.")
    srate = property(lambda self: self.ring.srate, doc="Nominal rate (0.0 irregular).")
    dtype = property(lambda self: self.ring.dtype, doc="Storage dtype (S<w> for strings).")
    format = property(lambda self: self.ring.format, doc="LSL channel format name.")
    meta = property(lambda self: self.ring.meta, doc="Metadata dict of the ring.")
    time_offset = property(lambda self: self.ring.time_offset, doc="LSL time_correction.")
    writer_pid = property(lambda self: self.ring.writer_pid, doc="Pid of the writer.")
    channel_names = property(lambda self: self.ring.channel_names, doc="Channel labels.")
    n_channels = property(lambda self: self.ring.n_channels, doc="Channel count.")

    @property
    def buffer(self) -> np.ndarray:
        """Ring storage ``(capacity, n_channels)``, read-only, zero-copy; row ``curr_i`` is next."""
        r = self.ring
        return r._data[: r.capacity]

    @property
    def buffer_t(self) -> np.ndarray:
        """Timestamp storage ``(capacity,)``, read-only, zero-copy."""
        r = self.ring
        return r._ts[: r.capacity]

    @property
    def curr_i(self) -> int:
        """Row of :attr:`buffer` the next sample goes to (always current)."""
        r = self.ring
        return r.head % r.capacity

    @property
    def latest_timestamp(self) -> float | None:
        """Timestamp of the newest sample, ``None`` if nothing was written yet."""
        r = self.ring
        for _ in range(_RETRIES + 1):
            h = r.head
            if h == 0:
                return None
            t = float(r._ts[(h - 1) % r.capacity])
            if r.pending - (h - 1) <= r.capacity:
                return t
        return float(r._ts[(r.head - 1) % r.capacity])

    # -- reading --------------------------------------------------------------------------
    def _decode(self, arr: np.ndarray | None) -> np.ndarray | None:
        """``str`` objects for a string ring's copies (callers checked the view is open)."""
        if arr is not None and self._ring.string_width:  # type: ignore[union-attr]
            return decode_strings(arr)
        return arr

    def _checked_window(
        self, n: int, data: bool = True, timestamps: bool = True, pad: bool = False
    ) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        """Consistent copies of the newest ``n`` rows, and the head they end at."""
        r = self.ring
        for _attempt in range(_RETRIES + 1):
            h = r.head
            m = n if pad else min(n, h)
            d, t, first = r.copy_range(h - m, h, data, timestamps)
            if first == h - m:
                break
        else:
            logger.warning(
                "ring %r: writer overwrote %d of %d rows during %d copies; returning the "
                "newest %d (make the ring larger or read smaller windows)",
                r.name, first - (h - m), m, _RETRIES + 1, h - first,
            )  # fmt: skip
        return self._decode(d), t, h

    def _n_from(self, n_samples: int | None, seconds: float | None) -> int:
        r = self.ring
        if n_samples is not None and seconds is not None:
            raise ValueError("give n_samples or seconds, not both")
        if seconds is not None:
            if r.srate <= 0:
                raise ValueError(
                    f"ring {r.name!r} is irregular (srate 0): ask for n_samples, not seconds"
                )
            n_samples = round(seconds * r.srate)
        n = self._n_buffer if n_samples is None else int(n_samples)
        if not 0 <= n <= r.capacity:
            raise ValueError(
                f"window of {n} samples requested; ring {r.name!r} keeps {r.capacity} "
                f"({r.capacity / r.srate if r.srate else r.capacity:g} "
                f"{'s' if r.srate else 'samples'}): ask for less or create a larger ring"
            )
        return n

    def get_window(
        self, n_samples: int | None = None, seconds: float | None = None, copy: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The newest samples as ``(data, timestamps)``, oldest first.

        Parameters
        ----------
        n_samples : int, optional
            Window length; defaults to ``buffer_size_s`` (the whole ring).
        seconds : float, optional
            Window length in seconds (``round(seconds * srate)`` samples).
        copy : bool
            ``False``: read-only zero-copy views of shared memory (raw bytes for
            string rings), live until overwritten ``capacity`` samples later.
            ``True``: private, consistent copies (``str`` objects for strings).

        Returns
        -------
        data : np.ndarray, shape (m, n_channels)
        timestamps : np.ndarray, shape (m,)
            ``m = min(n, head)``: only samples that were written.
        """
        n = self._n_from(n_samples, seconds)
        r = self.ring
        if not copy:
            h = r.head
            return r.window(min(n, h), h)
        d, t, _ = self._checked_window(n)
        return d, t  # type: ignore[return-value]

    def next_window(
        self,
        n_samples: int | None = None,
        seconds: float | None = None,
        *,
        timeout: float = 1.0,
        copy: bool = False,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Wait for new samples, then return the newest window; ``None`` on timeout.

        The closed-loop consumer's call: one :meth:`wait` and one
        :meth:`get_window` (same parameters and results), and the read cursor
        moves to the window's newest sample, so the next call waits for
        samples after it.

        Counters: :attr:`n_new` grows by the samples that arrived since the
        previous call (as with :meth:`update`); those among them that are
        older than the window's first sample (the loop took longer than the
        window is long) are added to :attr:`skipped_samples`: they never
        appeared in any window. Use :meth:`read_new` when every sample
        matters.

        Examples
        --------
        >>> while running:                                       # doctest: +SKIP
        ...     win = view.next_window(seconds=1.0, timeout=0.5)
        ...     if win is not None:
        ...         data, ts = win            # zero-copy, read-only, newest last
        """
        before = self._ring
        n = self._window_n(n_samples, seconds)  # bad input fails before waiting
        if not self.wait(timeout):
            return None
        ring = self._ring
        if ring is not before:  # wait() re-attached
            n = self._window_n(n_samples, seconds)
        if copy:
            d, t, h = self._checked_window(n)
        else:
            h = ring._hot[_H_HEAD]  # type: ignore[union-attr]
            d, t = ring.window(n if n < h else h, h)  # type: ignore[union-attr]
        cursor, self._cursor = self._cursor, h
        self.n_new += h - cursor
        if h - n > cursor:
            self.skipped_samples += h - n - cursor
        return d, t  # type: ignore[return-value]

    def _window_n(self, n_samples: int | None, seconds: float | None) -> int:
        """:meth:`_n_from`, validated once per length and ring."""
        key = (n_samples, seconds, self._ring)
        if key != self._win_key:
            self._win_n = self._n_from(n_samples, seconds)
            self._win_key = key
        return self._win_n

    def read_new(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Everything written since the previous call (or since attaching).

        Returns
        -------
        data : np.ndarray, shape (k, n_channels)
            Private copy (``str`` objects for string rings).
        timestamps : np.ndarray, shape (k,)
        lost : int
            Samples that were overwritten before they could be read (also
            added to :attr:`lost_samples`). Over all calls,
            ``sum(k) + sum(lost)`` equals the samples written meanwhile.
            After a re-attach (see the class notes) reading starts at the new
            ring's first sample; what the old ring had not delivered is lost.
        """
        link = self._link
        if link is None or time.monotonic() >= link.next_check:  # closed, or a check is due
            self._follow()
        r = self.ring
        cursor = self._cursor
        h = r._hot[_H_HEAD]  # type: ignore[index]
        start = h - r.capacity
        if start < cursor:
            start = cursor
        d, t, first = r.copy_range(start, h)
        lost = first - cursor
        self._cursor = h
        if lost:
            self.lost_samples += lost
        return self._decode(d), t, lost  # type: ignore[return-value]

    def update(self, wait: float | None = None) -> int:
        """Take in what is new (StreamWatcher API); returns the number of new samples.

        Sets :attr:`samples`/:attr:`times` to the new rows (if any) and adds
        the number of new samples, lost ones included, to :attr:`n_new`, which
        accumulates until you reset it. Shares its cursor with :meth:`read_new`.

        Parameters
        ----------
        wait : float, optional
            First block up to ``wait`` seconds until new samples exist (see
            :meth:`wait`); ``None`` or 0 returns at once, as StreamWatcher does.
        """
        if wait:
            self.wait(wait)
        d, t, lost = self.read_new()
        if len(t):
            self.samples, self.times = d, t
            self.last_t = float(t[-1])
        self.n_new += len(t) + lost
        return len(t) + lost

    def unfold_buffer(self) -> np.ndarray:
        """Copy of the newest ``buffer_size_s`` worth of samples, oldest first (``[-1]`` newest).

        One copy (no concatenation). Rows never written yet are zeros (empty
        strings), as in StreamWatcher.
        """
        return self._checked_window(self._n_buffer, timestamps=False, pad=True)[0]  # type: ignore[return-value]

    def unfold_buffer_t(self) -> np.ndarray:
        """Timestamps matching :meth:`unfold_buffer`, oldest first."""
        return self._checked_window(self._n_buffer, data=False, pad=True)[1]  # type: ignore[return-value]

    # -- following the supervisor ----------------------------------------------------------
    def wait(self, timeout: float = 1.0) -> bool:
        """Block until samples newer than the read cursor exist, at most ``timeout`` s.

        A supervised view sleeps on its doorbell (Linux; ZeroMQ head
        notifications elsewhere or with ``DPSHM_WAKE=zmq``: no polling); a
        ring without a supervisor is checked every 2 ms. Re-attaches when the
        stream moved (see the class notes).

        Returns
        -------
        bool
            ``True`` if new samples are ready (read them with :meth:`read_new`
            or :meth:`update`), ``False`` on timeout.
        """
        link = self._link
        if link is None:
            raise ValueError(f"SharedStreamView {self.name!r} is closed")
        now = time.monotonic()
        if now >= link.next_check:  # a registry check is due (at most every 0.25 s)
            self._follow()
        ring, cursor = self._ring, self._cursor
        hot = ring._hot  # type: ignore[union-attr]
        if hot is None:
            raise ValueError(f"SharedStreamView {self.name!r}: its ring was closed")
        if hot[_H_HEAD] > cursor:  # checked before sleeping: a lost wake-up costs no data
            return True
        if timeout <= 0:
            return False
        deadline = now + float(timeout)
        while True:
            got = link.wait(deadline, hot, cursor, ring.generation)  # type: ignore[union-attr]
            if got == "data":
                return True
            if got == "timeout":
                return self._has_new()
            self._follow(force=True)  # "moved": re-attach
            if self._has_new():
                return True
            ring, cursor = self._ring, self._cursor
            hot = ring._hot  # type: ignore[union-attr]

    def _has_new(self) -> bool:
        return self._ring.head > self._cursor  # type: ignore[union-attr]

    def _follow(self, force: bool = False) -> None:
        """Re-attach if the supervisor moved the stream to another ring."""
        link = self._link
        if link is None or self._ring is None:
            return
        if link.moved(force) is None:
            return
        try:
            self._attach(self.name)  # resolves the new ring; resets the cursor to its head
        except LookupError as exc:  # it moved again meanwhile: keep the old ring, retry
            logger.debug("SharedStreamView %r: re-attach failed (%s); retrying", self.name, exc)
            link.invalidate()
            return
        self._cursor = 0  # ... but a moved stream is read from its new ring's first sample
        logger.info(
            "SharedStreamView %r re-attached to ring %r (generation %d)",
            self.name, self.ring.name, self.ring.generation,
        )  # fmt: skip

    # -- StreamWatcher compatibility ------------------------------------------------------
    def connect_to_stream(self, identifier: dict | None = None) -> None:
        """StreamWatcher compatibility: (re-)attach, by ``identifier["name"]`` if given."""
        if identifier and identifier.get("name"):
            self.name = identifier["name"]
        self._attach(self.name)

    def disconnect(self) -> None:
        """StreamWatcher compatibility: same as :meth:`close`."""
        self.close()

    # -- lifetime -------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether the view was closed (or never attached)."""
        return self._ring is None or self._ring.closed

    def close(self) -> None:
        """Detach (idempotent). Zero-copy arrays you still hold stay valid."""
        ring, self._ring = self._ring, None
        if ring is not None:
            ring.close()
        link, self._link = self._link, None
        if link is not None:
            link.close()

    def __enter__(self) -> SharedStreamView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<SharedStreamView {self.name!r} closed>"
        return f"<SharedStreamView {self.name!r} head={self.head} lost={self.lost_samples}>"
