"""One shared stream: an LSL inlet, a shared-memory ring and the thread between them.

A :class:`Feed` is created by the :class:`~dpshm.shm.supervisor.Supervisor` for each
selected stream. Its thread connects an inlet (``recover=False`` so a vanished
outlet shows at once), creates the ring from the inlet's full stream info
(channel labels), then loops: pull with ``dest_obj`` into a preallocated chunk
buffer (blocking up to :data:`PULL_TIMEOUT_S` for the first sample), write the
chunk into the ring, ring the local consumers' doorbells, publish a head update. It

* marks the stream stale (ring header flag + registry) when the outlet goes,
  keeping the ring, and resumes when the resolver offers an outlet with the
  same source_id again;
* moves to a new ring with the next generation when the returning outlet has
  another format (channel count, channel format or nominal rate), unlinking
  the old one;
* refreshes the inlet's ``time_correction`` every :data:`TIME_CORRECTION_EVERY_S`
  into the ring header (``time_offset``).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpshm import lsl
from dpshm._logging import library_logger
from dpshm._threads import join_thread
from dpshm.config import StreamSelector
from dpshm.errors import StreamLostError
from dpshm.shm.registry import StreamEntry
from dpshm.shm.ring import SharedRing, samples_between

log = library_logger(__name__)

PULL_TIMEOUT_S = 0.1  # longest a feed blocks in one pull (bounds stop latency)
TIME_CORRECTION_EVERY_S = 5.0
LAG_EVERY_S = 0.1  # lag_s (a status figure) is measured after a write at most this often
JOIN_TIMEOUT_S = 3.0
MISSED_RESOLVES_BEFORE_STALE = 2
DEAD_UID_HOLD_S = 5.0
RING_NAME_TRIES = 3  # names tried when a segment name is taken by someone else


def stream_key(name: str, source_id: str, hostname: str = "") -> str:
    """Registry key of a stream: readable name plus a hash of its identity.

    The identity is the source_id (what LSL uses to recover a stream), or the
    name and host when the outlet has no source_id.
    """
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "stream"
    ident = source_id if source_id else f"{name}@{hostname}"
    return f"{slug}.{hashlib.sha1(ident.encode()).hexdigest()[:8]}"


def _format_of(spec: Any) -> tuple[int, str, float]:
    return (int(spec.n_channels), str(spec.channel_format), float(spec.srate))


@dataclass(frozen=True)
class FeedEnv:
    """What a feed needs from whoever runs it (the supervisor), and nothing more.

    Attributes
    ----------
    namespace, run_id : str
        Part of every ring name (``<namespace>.<key>.<run_id>.g<generation>``).
    capacity_for : callable
        ``(selector, srate) -> samples``: the ring length for a stream.
    string_width : int
        Bytes per string slot of marker rings.
    resolve_interval_s : float
        The resolver's period; a stream unseen for two of them turns stale.
    inlet_buflen : int
        Seconds (hundreds of samples if irregular) the LSL inlet may queue.
    stop_event : threading.Event
        Set when every feed must stop.
    on_write : callable
        ``(key, head, generation, newest_timestamp)`` after each chunk is in the
        ring: wakes the consumers.
    on_change : callable
        ``()`` when what the registry says about this stream changed (added,
        stale, back, new generation, time offset).
    """

    namespace: str
    run_id: str
    capacity_for: Callable[[StreamSelector, float], int]
    string_width: int
    resolve_interval_s: float
    inlet_buflen: int
    stop_event: threading.Event
    on_write: Callable[[str, int, int, float], None]
    on_change: Callable[[], None]


class Feed:
    """One stream: an inlet, a ring and the thread pulling from one into the other."""

    def __init__(self, env: FeedEnv, key: str, spec: Any, selector: StreamSelector, gen: int):
        self.env = env
        self.key = key
        self.selector = selector
        self.spec = spec
        self.generation = gen
        self.ring: SharedRing | None = None
        self.inlet: Any = None
        self.stale = False
        self.problem = ("STALE", "")  # (STALE or ERROR, short reason) while stale
        self.time_offset = 0.0
        self._offered: Any = None
        self._wake = threading.Event()
        self.missed_resolves = 0
        # statistics (written by the feed thread, read by the status loop)
        self.lag_s = float("nan")
        self.lost = 0
        self.measured_rate = 0.0
        self._count_since = 0
        self._last_ts = None
        self.last_data = time.monotonic()
        self._last_tc = 0.0
        # when lag_s is measured next (monotonic): a clock call into liblsl per chunk
        # costs a just-woken feed thread about 10 us; status.json shows it once a second
        self._next_lag = 0.0
        self._connecting = False
        self._have_offset = False
        self._dead_uid: str | None = None  # outlet instance known to be gone ...
        self._dead_until = 0.0  # ... not offered again before then (resolver caches)
        self.thread = threading.Thread(target=self._run, name=f"dpshm-feed-{key}", daemon=True)

    # -- ring ---------------------------------------------------------------------------
    def _make_ring(self, spec: Any) -> None:
        n_ch, fmt, srate = _format_of(spec)
        env = self.env
        capacity = env.capacity_for(self.selector, srate)
        name = f"{env.namespace}.{self.key}.{env.run_id}.g{self.generation}"
        meta = {
            "lsl": {
                "name": spec.name,
                "type": spec.type,
                "source_id": spec.source_id,
                "hostname": spec.hostname,
            },
            "namespace": env.namespace,
            "key": self.key,
        }
        names = list(spec.channel_names) if len(spec.channel_names) == n_ch else None
        for attempt in range(RING_NAME_TRIES):
            try:
                self.ring = SharedRing.create(
                    name,
                    n_ch,
                    capacity,
                    fmt,
                    srate=srate,
                    channel_names=names,
                    meta=meta,
                    string_width=env.string_width,
                    generation=self.generation,
                )
                break
            except FileExistsError:
                # not ours: our own leftovers were swept at start-up, and run_id is random.
                # Another process (another local user) holds the name: take a fresh one,
                # readers find the ring by the registry, never by guessing its name.
                if attempt == RING_NAME_TRIES - 1:
                    raise
                taken = name
                name = f"{env.namespace}.{self.key}.{env.run_id}-{secrets.token_hex(4)}"
                name += f".g{self.generation}"
                log.warning(
                    "shared-memory segment for ring %r already exists and is not this "
                    "supervisor's (another process or user created it): stream %r uses "
                    "ring %r instead",
                    taken, spec.name, name,
                )  # fmt: skip
        assert self.ring is not None
        self.ring.set_time_offset(self.time_offset)
        chunk = max(int(srate * 0.5), 1024) if srate > 0 else 1024
        self._data = np.zeros((chunk, n_ch), dtype=spec.dtype)
        self._ts = np.zeros(chunk, dtype=np.float64)
        log.info(
            "stream %r (%s, %d ch %s @ %g Hz) from host %r, source_id %r -> ring %r, "
            "%d samples, generation %d",
            spec.name, spec.type, n_ch, fmt, srate, spec.hostname, spec.source_id,
            self.ring.name, capacity, self.generation,
        )  # fmt: skip

    def entry(self) -> StreamEntry:
        """The registry entry of this stream."""
        spec, ring = self.spec, self.ring
        assert ring is not None
        return StreamEntry(
            key=self.key,
            name=spec.name,
            type=spec.type,
            source_id=spec.source_id,
            hostname=spec.hostname,
            ring=ring.name,
            generation=self.generation,
            channels=ring.n_channels,
            format=ring.format,
            srate=ring.srate,
            capacity=ring.capacity,
            time_offset=self.time_offset,
            stale=self.stale,
        )

    def status(self) -> dict[str, Any]:
        """Live figures for ``dpshm ls`` and the live status line."""
        ring = self.ring
        return {
            "head": ring.head if ring is not None else 0,
            "measured_rate": round(self.measured_rate, 3),
            "lag_s": None if np.isnan(self.lag_s) else round(self.lag_s, 6),
            "lost": self.lost,
            "stale": self.stale,
            "state": self.problem[0] if self.stale else "ok",
            "reason": self.problem[1] if self.stale else "",
            "generation": self.generation,
            "time_offset": self.time_offset,
        }

    def tick_rate(self, dt: float) -> None:
        """Fold the samples counted since the last tick into ``measured_rate``."""
        n, self._count_since = self._count_since, 0
        if dt > 0:
            self.measured_rate = (
                n / dt if self.measured_rate == 0 else (0.5 * self.measured_rate + 0.5 * n / dt)
            )

    # -- control (called by the resolver thread) --------------------------------------
    def offer(self, spec: Any) -> None:
        """The resolver sees this stream's outlet (again)."""
        self.missed_resolves = 0
        uid = spec.uid or None
        dead = uid is not None and uid == self._dead_uid and time.monotonic() < self._dead_until
        if self.inlet is None and not self._connecting and not dead:
            self._offered = spec
            self._wake.set()

    def missed(self) -> None:
        """The resolver did not see this stream's outlet in its last round."""
        self.missed_resolves += 1

    def start(self) -> None:
        """Start the feed thread; it connects to the stream it was created for."""
        self._offered = self.spec
        self._wake.set()
        self.thread.start()

    # -- the feed thread ----------------------------------------------------------------
    def _run(self) -> None:
        stop = self.env.stop_event
        try:
            while not stop.is_set():
                try:
                    self._step()
                except Exception:
                    log.exception("feed of stream %r failed; marking it stale", self.key)
                    with contextlib.suppress(Exception):
                        self._go_stale("its feed failed", "feed failed, see log", error=True)
                    stop.wait(1.0)  # the resolver offers the stream again
        finally:
            self._close_inlet()

    def _step(self) -> None:
        """One round of the feed thread: (re)connect, or pull one chunk and write it."""
        if self._offered is not None:
            self._connect(self._offered)
        if self.inlet is None:
            self._wake.wait(0.2)
            self._wake.clear()
            return
        try:
            n = self.inlet.pull_into(self._data, self._ts, timeout=PULL_TIMEOUT_S)
        except StreamLostError:
            self._mark_dead(self.spec)
            self._go_stale("its outlet closed", "outlet closed")
            return
        now = time.monotonic()
        if n:
            self._write(n, now)
            self.last_data = now
        elif (
            self.missed_resolves >= MISSED_RESOLVES_BEFORE_STALE
            and now - self.last_data > 2 * self.env.resolve_interval_s
        ):
            self._go_stale("its outlet is no longer visible", "outlet not visible")
            return
        if now - self._last_tc > TIME_CORRECTION_EVERY_S:
            self._last_tc = now
            self._time_correction()

    def _write(self, n: int, now: float) -> None:
        ring = self.ring
        assert ring is not None
        ts = self._ts[:n]
        head = ring.write(self._data[:n], ts)
        newest = float(ts[-1])
        self.env.on_write(self.key, head, self.generation, newest)
        self._count_since += n
        srate = ring.srate
        prev = self._last_ts
        if srate > 0 and prev is not None:
            # LSL drops the oldest queued samples, so a drop shows at a chunk boundary
            self.lost += samples_between(prev, float(ts[0]), srate)
        self._last_ts = newest
        if now >= self._next_lag:
            self._next_lag = now + LAG_EVERY_S
            self.lag_s = lsl.local_clock() - (newest + self.time_offset)

    def _time_correction(self) -> None:
        """Refresh ``time_offset`` (ring header each time; registry when it moved > 1 ms)."""
        try:
            off = float(self.inlet.time_correction(timeout=0.5))
        except Exception as exc:  # a slow answer is retried in TIME_CORRECTION_EVERY_S
            log.debug("time correction of %r failed: %s", self.key, exc)
            return
        assert self.ring is not None
        self.ring.set_time_offset(off)
        first, self._have_offset = not self._have_offset, True
        if first or abs(off - self.time_offset) > 1e-3:
            self.time_offset = off
            self.env.on_change()
        self.time_offset = off

    def _connect(self, spec: Any) -> None:
        self._connecting = True
        try:
            self._offered = None
            self._connect_to(spec)
        finally:
            self._connecting = False

    def _connect_to(self, spec: Any) -> None:
        self._close_inlet()
        try:
            inlet = lsl.Inlet(
                spec, max_buflen_s=self.env.inlet_buflen, recover=False, open_timeout=2.0
            )
        except Exception as exc:
            self._mark_dead(spec)
            self._go_stale(
                f"no inlet could be opened ({exc}); retrying when it is seen again",
                "cannot open inlet",
                error=True,
            )
            return
        try:
            self._adopt(inlet.spec)  # the full info: channel labels and metadata
        except BaseException:
            inlet.close()
            raise
        self.inlet = inlet
        self._last_tc = 0.0  # the feed loop asks for the time correction next
        self.missed_resolves = 0
        self.last_data = time.monotonic()
        if self.stale:
            self.stale = False
            self.ring.set_stale(False)  # type: ignore[union-attr]
            log.info("stream %r is back; writing resumes", self.spec.name)
        self.env.on_change()

    def _adopt(self, full: Any) -> None:
        """Create the ring, or a new generation of it when the format changed."""
        if self.ring is None:
            self.spec = full
            self._make_ring(full)
        elif _format_of(full) != (self.ring.n_channels, self.ring.format, self.ring.srate):
            old = self.ring
            log.warning(
                "stream %r changed format %s -> %s: new ring, generation %d -> %d",
                full.name, _format_of(self.spec), _format_of(full),
                self.generation, self.generation + 1,
            )  # fmt: skip
            self.generation += 1
            self._last_ts = None
            self._make_ring(full)
            old.unlink()
            old.close()
        self.spec = full

    def _mark_dead(self, spec: Any) -> None:
        self._dead_uid = spec.uid or None
        self._dead_until = time.monotonic() + DEAD_UID_HOLD_S

    def _go_stale(self, why: str, short: str, error: bool = False) -> None:
        """Mark the stream stale; ``why`` goes to the log, ``short`` to the status tables."""
        self._close_inlet()
        self.problem = ("ERROR" if error else "STALE", short)
        if not self.stale:
            self.stale = True
            if self.ring is not None:
                self.ring.set_stale(True)
            self._last_ts = None
            log.warning("stream %r is stale: %s; keeping its ring", self.spec.name, why)
            self.env.on_change()

    def _close_inlet(self) -> None:
        inlet, self.inlet = self.inlet, None
        if inlet is not None:
            with contextlib.suppress(Exception):
                inlet.close()

    def close(self) -> None:
        """Join the thread (bounded) and unlink the ring."""
        self._wake.set()
        join_thread(self.thread, JOIN_TIMEOUT_S)
        if self.thread.is_alive():
            log.warning("feed thread of %r did not stop within %s s", self.key, JOIN_TIMEOUT_S)
        ring, self.ring = self.ring, None
        if ring is not None:
            ring.unlink()
            ring.close()
