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

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpshm._logging import library_logger
from dpshm.dareplane.timing import check_seconds
from dpshm.errors import AmbiguousStreamError
from dpshm.formats import decode_strings
from dpshm.shm.follow import StreamLink
from dpshm.shm.ring import SharedRing, samples_between

logger = library_logger(__name__)

_RETRIES = 3
_INF = float("inf")
WAIT_POLL_S = 0.05  # registry polling period while the constructor waits (timeout=)
MAX_GAPS = 100  # SharedStreamView.gaps keeps the newest this many
RESTARTED = "supervisor restarted"  # Gap.reason


@dataclass
class Gap:
    """A stretch of a followed stream that no ring holds: the view re-attached.

    Attributes
    ----------
    reason : str
        ``"supervisor restarted"`` (samples the outlet sent while no supervisor
        ran were not captured) or ``"new generation"`` (the outlet came back
        with another format; nothing was missed by dpshm).
    generation : int
        Generation of the ring re-attached to.
    unread : int
        Samples of the old ring the view had not read yet (counted as lost,
        with ``missed``, by the first read of the new ring's samples).
    since, until : float
        Wall-clock times (``time.time()``): when the view saw the supervisor
        go (else the old ring's last write), and when the new ring was created.
    last_t : float or None
        Newest timestamp of the old ring (the outlet's clock).
    next_t : float or None
        First timestamp of the new ring; ``None`` until its first sample is read.
    missed : int or None
        Samples the outlet sent between ``last_t`` and ``next_t`` that no ring
        holds, estimated from the timestamps of a regular stream after a
        supervisor restart (counted in ``lost_samples`` when the new ring's
        first sample is read). ``None`` when unknown: irregular (marker) streams,
        a new generation, or not read yet.
    """

    reason: str
    generation: int
    unread: int
    since: float
    until: float
    last_t: float | None
    next_t: float | None = None
    missed: int | None = None


def _is_count(x: Any) -> bool:
    """An integer, or a finite float (a bool is not a count)."""
    if isinstance(x, bool):
        return False
    return isinstance(x, (int, np.integer)) or (isinstance(x, float) and math.isfinite(x))


class SharedStreamView:
    """Read-only view of the shared-memory ring ``name``.

    Parameters
    ----------
    name : str, optional
        LSL stream name as shared by the supervisor (``dpshm up``), or a ring
        name (``"eeg"`` for the segment ``dpshm_eeg``) for rings created
        without a supervisor. A registry key or a source_id also work.
        Optional when ``type`` or ``source_id`` selects the stream.
    buffer_size_s : float, optional
        Length of :meth:`unfold_buffer` in seconds (StreamWatcher's
        parameter). Defaults to the whole ring; clamped to the ring's capacity.
    type : str, optional
        The stream's LSL type (``"EEG"``, ``"Markers"``) must match.
    source_id : str, optional
        The stream's LSL source_id must match (chooses among streams sharing a
        name).
    namespace : str, optional
        Supervisor namespace (default ``$DPSHM_NAMESPACE`` or ``"default"``).
    timeout : float
        Seconds to wait for the supervisor and the stream to appear (as
        mne-lsl's ``StreamLSL.connect(timeout=)`` and pylsl's
        ``resolve_byprop(..., timeout=)``); the default ``0`` looks once. Use
        it when the consumer starts together with ``dpshm up``.

    Attributes
    ----------
    lost_samples : int
        Samples that were written (or, after a supervisor restart, sent by
        the outlet) but never returned by :meth:`read_new`/:meth:`update`.
    reattached : int
        How often the view moved to another ring (see Notes).
    gaps : collections.deque of Gap
        One :class:`Gap` per re-attach (the newest :data:`MAX_GAPS`): when,
        why and how many samples no ring holds.

    Notes
    -----
    A supervised view follows its stream: when the supervisor bumps the
    stream's generation (its outlet came back with another format) or is
    restarted, the next :meth:`wait`, :meth:`update` or :meth:`read_new`
    re-attaches to the new ring and reads it from its first sample; no retry
    code is needed. :attr:`generation` tells which ring is attached. Samples
    the old ring published that the view had not read are counted as lost:
    in the ``lost`` of the first :meth:`read_new` that returns rows of the new
    ring (and so in :meth:`update`'s count), and in :attr:`lost_samples` by
    :meth:`next_window`.

    What the outlet sends while no supervisor runs is not captured. The view
    says so: a warning is logged when the supervisor goes and again at the
    re-attach, :attr:`reattached` counts and :attr:`gaps` records each
    stretch, and for a regular stream the samples missed (estimated from the
    timestamps on both sides) are added to ``lost`` of the next
    :meth:`read_new` and to :attr:`lost_samples`. For an irregular (marker)
    stream the number of markers missed cannot be known: the warning and the
    :class:`Gap` give the time range.

    Raises
    ------
    StreamNotFoundError
        A supervisor runs but shares no such stream (the message lists them),
        also after waiting ``timeout`` seconds.
    AmbiguousStreamError
        Several shared streams match (the message lists them with their
        source_ids; pass ``source_id`` or ``type``). Raised at once.
    NoSupervisorError
        No supervisor runs and no ring has that name (also a
        ``RingNotFoundError`` and a ``SupervisorNotRunningError``).
    ValueError
        No name, type or source_id; a negative or non-finite ``timeout``.

    Examples
    --------
    >>> with SharedStreamView("eeg", timeout=10) as sv:   # doctest: +SKIP
    ...     data, ts = sv.get_window(seconds=1.0)     # zero-copy, read-only
    ...     new, new_ts, lost = sv.read_new()         # exact: what arrived since last call
    >>> markers = SharedStreamView(type="Markers")    # doctest: +SKIP
    """

    _ring: SharedRing | None = None
    _link: StreamLink | None = None

    def __init__(
        self,
        name: str | None = None,
        buffer_size_s: float | None = None,
        *,
        type: str | None = None,
        source_id: str | None = None,
        namespace: str | None = None,
        timeout: float = 0.0,
    ) -> None:
        if name is None and type is None and source_id is None:
            raise ValueError(
                "SharedStreamView needs a stream: give its name, type=... or source_id=... "
                "(`dpshm ls` or dpshm.list_streams() show what is shared)"
            )
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout >= 0):
            raise ValueError(
                f"timeout={timeout!r}: give the seconds to wait for the stream, a finite "
                "number >= 0 (0 looks once)"
            )
        self.name = name
        self.buffer_size_s = buffer_size_s
        self.n_new = 0
        self.lost_samples = 0
        self.skipped_samples = 0  # see next_window()
        self.cut_samples = 0  # see get_window()
        self._warned_cut = False
        self.reattached = 0
        self.gaps: deque[Gap] = deque(maxlen=MAX_GAPS)
        self._gap: Gap | None = None  # a gap whose new ring's first sample is not read yet
        self._sup: tuple[int, float] | None = None  # the supervisor that announced the ring
        self._win_key: tuple | None = None  # next_window()'s validated length
        self._win_n = 0
        self.samples: np.ndarray = np.empty((0, 0))
        self.times: np.ndarray = np.empty(0)
        self.last_t = 0.0
        self._namespace = namespace
        self._link = StreamLink(name, source_id, namespace, type)
        try:
            self._attach_waiting(float(timeout))
        except BaseException:
            self._link.close()
            raise

    # -- attaching (one place; the supervisor layer extends it) ---------------------------
    def _attach_waiting(self, timeout: float) -> None:
        """:meth:`_attach`, retried until ``timeout`` while the supervisor or stream is missing."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._attach()
                return
            except AmbiguousStreamError:  # waiting does not make a choice
                raise
            except LookupError as exc:  # no supervisor, no such stream (yet)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if timeout > 0:
                        raise type(exc)(f"after waiting {timeout:g} s: {exc}") from None
                    raise type(exc)(
                        f"{exc} To wait for it, pass timeout=SECONDS to SharedStreamView."
                    ) from None
                time.sleep(min(WAIT_POLL_S, remaining))

    def _attach(self) -> None:
        """Attach to the requested stream's ring and reset the read cursor to its head."""
        link = self._link
        if link is None:  # connect_to_stream() after close()
            link = self._link = StreamLink(self.name, namespace=self._namespace)
        target = link.resolve()
        ring = SharedRing.attach(target.ring)
        link.attached = target.ring
        if self.name is None:  # chosen by type/source_id: name it
            self.name = target.entry.name if target.entry is not None else target.ring
        self._sup = target.supervisor
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
        return self.ring.buffer

    @property
    def buffer_t(self) -> np.ndarray:
        """Timestamp storage ``(capacity,)``, read-only, zero-copy."""
        return self.ring.buffer_t

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
            t = r.copy_range(h - 1, h, data=False)[1]
            if len(t):
                return float(t[0])
        return float(r.window(1)[1][0])  # the writer overran each copy: its newest, unchecked

    # -- reading --------------------------------------------------------------------------
    def _decode(self, arr: np.ndarray | None) -> np.ndarray | None:
        """``str`` objects for a string ring's copies (callers checked the view is open)."""
        if arr is not None and self._ring.string_width:  # type: ignore[union-attr]
            return decode_strings(arr)
        return arr

    def _checked_window(
        self, n: int, data: bool = True, timestamps: bool = True, pad: bool = False
    ) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        """Consistent copies of the newest ``n`` rows, and the head they end at.

        Rows the writer overwrote during every attempt are left out (the copy
        starts later) and counted in :attr:`cut_samples`.
        """
        r = self.ring
        for _attempt in range(_RETRIES + 1):
            h = r.head
            m = n if pad else min(n, h)
            d, t, first = r.copy_range(h - m, h, data, timestamps)
            if first == h - m:
                break
        else:
            cut = first - (h - m)
            self.cut_samples += cut
            log = logger.debug if self._warned_cut else logger.warning
            self._warned_cut = True
            log(
                "ring %r: writer overwrote %d of %d rows during %d copies; returning the "
                "newest %d (counted in cut_samples, warned once; make the ring larger or "
                "read smaller windows)",
                r.name, cut, m, _RETRIES + 1, h - first,
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
            seconds = check_seconds("seconds", seconds, hint="the window's length")
            n_samples = round(seconds * r.srate)
        elif n_samples is not None and not _is_count(n_samples):
            raise TypeError(f"n_samples must be a number of samples, got {n_samples!r:.60}")
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
            ``m = min(n, head)``: only samples that were written. A copy is
            shorter when the writer overwrote its oldest rows while they were
            copied, in each of four attempts (a writer that laps the ring
            during one copy); those rows are counted in :attr:`cut_samples`.
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
        window is long, or a copy was cut, see :meth:`get_window`) are added
        to :attr:`skipped_samples`: they never appeared in any window. Use
        :meth:`read_new` when every sample matters.

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
            first = h - len(t)  # type: ignore[arg-type]
        else:
            h = ring.head  # type: ignore[union-attr]
            d, t = ring.window(n if n < h else h, h)  # type: ignore[union-attr]
            first = h - n
        cursor, self._cursor = self._cursor, h
        self.n_new += h - cursor
        if first > cursor:
            self.skipped_samples += first - cursor
        if self._gap is not None:  # re-attached: what the old ring (and, after a
            self.lost_samples += self._close_gap()  # restart, the outlet) gave no ring
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
            added to :attr:`lost_samples`): exactly the gap between the
            previous call's last sample and this call's first, so
            ``timestamps`` follow the previous call's after ``lost`` missing
            samples, and a call that returns no rows reports no loss (a
            later call reports it with the rows after it). Over all calls,
            ``sum(k) + sum(lost)`` equals the samples written meanwhile (see
            :meth:`SharedRing.read <dpshm.shm.ring.SharedRing.read>`).
            After a re-attach (see the class notes) reading starts at the new
            ring's first sample; what the old ring had not delivered is
            counted as lost, and after a supervisor restart so are the samples
            a regular stream sent while none ran (estimated from timestamps).
        """
        link = self._link
        if link is None or time.monotonic() >= link.next_check:  # closed, or a check is due
            self._follow()
        d, t, lost, self._cursor = self.ring.read(self._cursor)
        if self._gap is not None and len(t):  # re-attached after a supervisor restart
            lost += self._close_gap()
        if lost:
            self.lost_samples += lost
        return self._decode(d), t, lost

    def update(self, wait: float | None = None) -> int:
        """Take in what is new (StreamWatcher API); returns the number of new samples.

        Sets :attr:`samples`/:attr:`times` to the new rows (if any) and adds
        the number of new samples, lost ones included, to :attr:`n_new`, which
        accumulates until you reset it. Shares its cursor with :meth:`read_new`:
        the count is ``len(samples) + lost`` of that call, so whenever it is
        not 0, :attr:`samples` holds the rows that follow the lost ones.

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

        Parameters
        ----------
        timeout : float
            Seconds, finite and ``>= 0``; ``0`` only checks.

        Returns
        -------
        bool
            ``True`` if new samples are ready (read them with :meth:`read_new`
            or :meth:`update`), ``False`` on timeout.

        Raises
        ------
        ValueError, TypeError
            ``timeout`` is NaN, infinite, negative or not a number.
        """
        if type(timeout) is not float or not 0.0 <= timeout < _INF:  # NaN, inf, < 0, non-float
            timeout = check_seconds("timeout", timeout, hint="e.g. wait(timeout=0.5)")
        link = self._link
        if link is None:
            raise ValueError(f"SharedStreamView {self.name!r} is closed")
        now = time.monotonic()
        if now >= link.next_check:  # a registry check is due (at most every 0.25 s)
            self._follow()
        ring, cursor = self._ring, self._cursor  # (not None while the link is open)
        if ring.head > cursor:  # checked before sleeping: a lost wake-up costs no data
            return True
        if timeout <= 0:
            return False
        deadline = now + float(timeout)
        while True:
            got = link.wait(deadline, ring, cursor)
            if got == "data":
                return True
            if got == "timeout":
                return self._has_new()
            self._follow(force=True)  # "moved": re-attach
            if self._has_new():
                return True
            ring, cursor = self._ring, self._cursor

    def _has_new(self) -> bool:
        return self._ring.head > self._cursor  # type: ignore[union-attr]

    def _follow(self, force: bool = False) -> None:
        """Re-attach if the supervisor moved the stream to another ring."""
        link = self._link
        old = self._ring
        if link is None or old is None:
            return
        if link.moved(force) is None:
            return
        unread = max(0, old.head - self._cursor)  # the old ring's rows never read: lost
        last_t = self.latest_timestamp
        old_sup, since = self._sup, link.gone_at or old.last_write
        try:
            self._attach()  # resolves the new ring; resets the cursor to its head
        except LookupError as exc:  # it moved again meanwhile: keep the old ring, retry
            logger.debug("SharedStreamView %r: re-attach failed (%s); retrying", self.name, exc)
            link.invalidate()
            return
        self._cursor = 0  # ... but a moved stream is read from its new ring's first sample
        link.gone_at = None
        ring = self.ring
        restarted = self._sup != old_sup
        gap = Gap(
            RESTARTED if restarted else "new generation",
            ring.generation, unread, since, ring.created, last_t,
        )  # fmt: skip
        self.reattached += 1
        self.gaps.append(gap)
        self._gap = gap  # its samples count as lost when the new ring's first is read
        if restarted:
            logger.warning(
                "SharedStreamView %r re-attached to ring %r (generation %d) after the "
                "supervisor restarted: %d unread samples of the old ring lost; %s",
                self.name, ring.name, ring.generation, unread,
                "samples sent while no supervisor ran are counted as lost when the next ones "
                "arrive" if ring.srate > 0 else "markers sent while no supervisor ran "
                f"({_clock(since)} to {_clock(ring.created)}) were not captured (how many "
                "is unknown)",
            )  # fmt: skip
        else:
            logger.info(
                "SharedStreamView %r re-attached to ring %r (generation %d)",
                self.name, ring.name, ring.generation,
            )  # fmt: skip

    def _close_gap(self) -> int:
        """After a re-attach.

        The old ring's unread samples, and after a supervisor restart those a regular
        stream sent before the new ring's first.

        Returns the number to add to ``lost`` (0 and the gap stays open while the
        new ring is empty).
        """
        gap, r = self._gap, self.ring
        h = r.head
        oldest = h - r.capacity if h > r.capacity else 0
        if h == 0:
            return 0
        _, t, first = r.copy_range(oldest, oldest + 1, data=False)
        if not len(t):  # overwritten while copied: try on the next read
            return 0
        self._gap = None
        gap.next_t = float(t[0])  # type: ignore[union-attr]
        unread = gap.unread  # type: ignore[union-attr]
        if gap.reason != RESTARTED or gap.last_t is None or r.srate <= 0:  # type: ignore[union-attr]
            return unread
        missed = max(0, samples_between(gap.last_t, gap.next_t, r.srate) - first)  # type: ignore[union-attr,arg-type]
        gap.missed = missed  # type: ignore[union-attr]
        if missed:
            logger.warning(
                "SharedStreamView %r: %d samples sent while no supervisor ran were not "
                "captured (timestamps %.3f to %.3f); counted as lost",
                self.name, missed, gap.last_t, gap.next_t,  # type: ignore[union-attr]
            )  # fmt: skip
        return unread + missed

    # -- StreamWatcher compatibility ------------------------------------------------------
    def connect_to_stream(self, identifier: dict | None = None) -> None:
        """StreamWatcher compatibility: (re-)attach, by ``identifier["name"]`` if given."""
        name = identifier.get("name") if identifier else None
        if name and name != self.name:
            if self._link is not None:
                self._namespace = self._link.namespace
                self._link.close()
                self._link = None
            self.name = name
        self._attach()

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


def _clock(t: float) -> str:
    """Wall-clock time ``t`` as ``HH:MM:SS`` (for log messages)."""
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "?"
