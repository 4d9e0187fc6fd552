"""The supervisor behind ``dpshm up``: LSL streams -> shared-memory rings -> ZeroMQ.

One :class:`Supervisor` per namespace (an flock in the runtime directory
enforces it). It

* resolves LSL streams every ``resolve_interval_s`` and starts one
  :class:`_Feed` (a thread with one inlet and one ring) per selected stream;
* pulls with ``dest_obj`` into a preallocated chunk buffer, writes the chunk into
  the ring, then publishes a head update (stream, head, generation, newest
  timestamp) on the bus;
* marks a stream stale (ring header flag + registry) when its outlet vanishes,
  keeps the ring, and resumes writing when an outlet with the same source_id
  returns; a changed format (channels, channel format, rate) gets a new ring
  with the next generation, and consumers re-attach on their next update;
* publishes the LSL ``time_correction`` of each inlet in the ring header
  (``time_offset``) and the registry: rings hold timestamps as sent by the
  outlet; ``timestamp + time_offset`` is the local LSL clock;
* on start removes the segments a killed predecessor left behind; on stop
  (SIGINT/SIGTERM, :meth:`Supervisor.stop`) unlinks every ring it created.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dpshm import lsl, registry
from dpshm.bus import HeadPublisher, LogPublisher, ZmqLogHandler
from dpshm.config import StreamSelector, SupervisorConfig
from dpshm.errors import StreamLostError
from dpshm.ring import SEGMENT_PREFIX, SHM_DIR, SharedRing, unlink_ring

log = logging.getLogger(__name__)

PULL_TIMEOUT_S = 0.1  # longest a feed blocks in one pull (bounds stop latency)
TIME_CORRECTION_EVERY_S = 5.0
STATUS_EVERY_S = 1.0
JOIN_TIMEOUT_S = 3.0
MISSED_RESOLVES_BEFORE_STALE = 2
DEAD_UID_HOLD_S = 5.0
GAP_TOLERANCE_S = 0.05  # timestamp jitter not counted as lost samples


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


class _Feed:
    """One stream: an inlet, a ring and the thread pulling from one into the other."""

    def __init__(self, sup: Supervisor, key: str, spec: Any, selector: StreamSelector, gen: int):
        self.sup = sup
        self.key = key
        self.selector = selector
        self.spec = spec
        self.generation = gen
        self.ring: SharedRing | None = None
        self.inlet: Any = None
        self.stale = False
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
        self._connecting = False
        self._have_offset = False
        self._dead_uid: str | None = None  # outlet instance known to be gone ...
        self._dead_until = 0.0  # ... not offered again before then (resolver caches)
        self.thread = threading.Thread(target=self._run, name=f"dpshm-feed-{key}", daemon=True)

    # -- ring ---------------------------------------------------------------------------
    def _make_ring(self, spec: Any) -> None:
        n_ch, fmt, srate = _format_of(spec)
        capacity = self.sup.config.buffer_for(self.selector, srate)
        name = f"{self.sup.config.namespace}.{self.key}.{self.sup.run_id}.g{self.generation}"
        meta = {
            "lsl": {
                "name": spec.name,
                "type": spec.type,
                "source_id": spec.source_id,
                "hostname": spec.hostname,
            },
            "namespace": self.sup.config.namespace,
            "key": self.key,
        }
        names = list(spec.channel_names) if len(spec.channel_names) == n_ch else None
        self.ring = SharedRing.create(
            name,
            n_ch,
            capacity,
            fmt,
            srate=srate,
            channel_names=names,
            meta=meta,
            string_width=self.sup.config.string_width,
            generation=self.generation,
        )
        self.ring.set_time_offset(self.time_offset)
        chunk = max(int(srate * 0.5), 1024) if srate > 0 else 1024
        self._data = np.zeros((chunk, n_ch), dtype=spec.dtype)
        self._ts = np.zeros(chunk, dtype=np.float64)
        log.info(
            "stream %r (%s, %d ch %s @ %g Hz) -> ring %r, %d samples, generation %d",
            spec.name, spec.type, n_ch, fmt, srate, self.ring.name, capacity, self.generation,
        )  # fmt: skip

    def entry(self) -> dict[str, Any]:
        """This stream's registry entry."""
        spec, ring = self.spec, self.ring
        assert ring is not None
        return {
            "name": spec.name,
            "type": spec.type,
            "source_id": spec.source_id,
            "hostname": spec.hostname,
            "ring": ring.name,
            "generation": self.generation,
            "channels": ring.n_channels,
            "format": ring.format,
            "srate": ring.srate,
            "capacity": ring.capacity,
            "time_offset": self.time_offset,
            "stale": self.stale,
        }

    def status(self) -> dict[str, Any]:
        """Live figures for ``dpshm ls`` and the live status line."""
        ring = self.ring
        return {
            "head": ring.head if ring is not None else 0,
            "measured_rate": round(self.measured_rate, 3),
            "lag_s": None if np.isnan(self.lag_s) else round(self.lag_s, 6),
            "lost": self.lost,
            "stale": self.stale,
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
        self._offered = self.spec
        self._wake.set()
        self.thread.start()

    # -- the feed thread ----------------------------------------------------------------
    def _run(self) -> None:
        stop = self.sup.stop_event
        try:
            while not stop.is_set():
                try:
                    self._step()
                except Exception:
                    log.exception("feed of stream %r failed; marking it stale", self.key)
                    with contextlib.suppress(Exception):
                        self._go_stale("its feed failed")
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
            self._go_stale("its outlet closed")
            return
        now = time.monotonic()
        if n:
            self._write(n)
            self.last_data = now
        elif (
            self.missed_resolves >= MISSED_RESOLVES_BEFORE_STALE
            and now - self.last_data > 2 * self.sup.config.resolve_interval_s
        ):
            self._go_stale("its outlet is no longer visible")
            return
        if now - self._last_tc > TIME_CORRECTION_EVERY_S:
            self._last_tc = now
            self._time_correction()

    def _write(self, n: int) -> None:
        ring = self.ring
        assert ring is not None
        ts = self._ts[:n]
        head = ring.write(self._data[:n], ts)
        newest = float(ts[-1])
        self.sup.heads.publish(self.key, head, self.generation, newest)
        self._count_since += n
        srate = ring.srate
        prev = self._last_ts
        if srate > 0 and prev is not None:
            # LSL drops the oldest queued samples, so a drop shows at a chunk boundary
            gap = float(ts[0]) - prev
            if gap > 1.5 / srate + GAP_TOLERANCE_S:
                self.lost += round(gap * srate) - 1
        self._last_ts = newest
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
            self.sup.registry_changed()
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
                spec, max_buflen_s=self.sup.inlet_buflen(), recover=False, open_timeout=2.0
            )
        except Exception as exc:
            self._mark_dead(spec)
            self._go_stale(f"no inlet could be opened ({exc}); retrying when it is seen again")
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
        self.sup.registry_changed()

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

    def _go_stale(self, why: str) -> None:
        self._close_inlet()
        if not self.stale:
            self.stale = True
            if self.ring is not None:
                self.ring.set_stale(True)
            self._last_ts = None
            log.warning("stream %r is stale: %s; keeping its ring", self.spec.name, why)
            self.sup.registry_changed()

    def _close_inlet(self) -> None:
        inlet, self.inlet = self.inlet, None
        if inlet is not None:
            with contextlib.suppress(Exception):
                inlet.close()

    def close(self) -> None:
        """Join the thread (bounded) and unlink the ring."""
        self._wake.set()
        if self.thread.is_alive():
            self.thread.join(JOIN_TIMEOUT_S)
            if self.thread.is_alive():
                log.warning("feed thread of %r did not stop within %s s", self.key, JOIN_TIMEOUT_S)
        ring, self.ring = self.ring, None
        if ring is not None:
            ring.unlink()
            ring.close()


class Supervisor:
    """Shares LSL streams through shared-memory rings; see the module docstring.

    Parameters
    ----------
    config : SupervisorConfig
        From :func:`dpshm.config.load_config`.

    Use as a context manager or call :meth:`start` / :meth:`close`;
    :meth:`run` blocks until :meth:`stop`, SIGINT/SIGTERM or ``duration``.
    """

    _lock: registry.SupervisorLock | None = None
    heads: HeadPublisher | None = None
    logs: LogPublisher | None = None
    _handler: ZmqLogHandler | None = None
    _closed = True

    def __init__(self, config: SupervisorConfig):
        self.config = config
        self.stop_event = threading.Event()
        self.feeds: dict[str, _Feed] = {}
        self._feeds_lock = threading.Lock()
        self._registry_dirty = threading.Event()
        self._resolver: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        self.run_id = format(int(time.time() * 1000) % 36**6, "x")[-6:]
        self._prev_generations: dict[str, int] = {}
        self.started = 0.0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> Supervisor:
        """Take the namespace lock, clean up, bind the bus, start resolving.

        Raises
        ------
        SupervisorRunningError
            Another supervisor runs on this namespace.
        """
        ns = self.config.namespace
        self._lock = registry.SupervisorLock(ns)
        self._closed = False
        try:
            self._cleanup_predecessor()
            nsdir = registry.namespace_dir(ns)
            if self.config.transport == "tcp":
                heads_ep, logs_ep = "tcp://127.0.0.1:*", "tcp://127.0.0.1:*"
            else:
                heads_ep, logs_ep = f"ipc://{nsdir}/heads.ipc", f"ipc://{nsdir}/logs.ipc"
            self.heads = HeadPublisher(heads_ep)
            self.logs = LogPublisher(logs_ep)
            self._handler = self.logs.handler()
            logging.getLogger("dpshm").addHandler(self._handler)
            self.started = time.time()
            self._write_registry()
            self._resolver = threading.Thread(
                target=self._resolve_loop, name="dpshm-resolver", daemon=True
            )
            self._resolver.start()
            self._keeper = threading.Thread(
                target=self._housekeeping, name="dpshm-status", daemon=True
            )
            self._keeper.start()
            log.info(
                "supervisor up on namespace %r (pid %d), heads %s, logs %s",
                ns, os.getpid(), self.heads.endpoint, self.logs.endpoint,
            )  # fmt: skip
        except BaseException:
            self.close()
            raise
        return self

    def _cleanup_predecessor(self) -> None:
        """Remove what a supervisor killed on this namespace left behind."""
        ns = self.config.namespace
        old = registry.read_registry_raw(ns)
        if old:
            for key, s in dict(old.get("streams", {})).items():
                self._prev_generations[key] = int(s.get("generation", 0))
            registry.remove_registry(ns)
        prefix = f"{SEGMENT_PREFIX}{ns}."
        try:
            leftovers = sorted(e for e in os.listdir(SHM_DIR) if e.startswith(prefix))
        except OSError:
            leftovers = []
        for seg in leftovers:
            with contextlib.suppress(FileNotFoundError):
                unlink_ring(seg, force=True)
                log.warning(
                    "removed shared-memory segment %r left by a dead supervisor (pid %s)",
                    seg, (old or {}).get("pid", "unknown"),
                )  # fmt: skip

    def inlet_buflen(self) -> int:
        """Seconds (hundreds of samples if irregular) the LSL inlet queues."""
        return max(int(self.config.buffer_s) + 1, 2)

    def stop(self) -> None:
        """Ask :meth:`run` to return (thread- and signal-safe)."""
        self.stop_event.set()

    def run(
        self,
        duration: float | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        handle_signals: bool = True,
    ) -> None:
        """Block until stopped (the supervisor works in its own threads).

        Parameters
        ----------
        duration : float, optional
            Return after this many seconds.
        on_status : callable, optional
            Called with :meth:`status` about once a second (the CLI's live view).
        handle_signals : bool
            Install SIGINT/SIGTERM handlers that stop the supervisor (main
            thread only); the previous handlers are restored on return.
        """
        previous = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: self.stop_event.set())
        try:
            end = None if duration is None else time.monotonic() + duration
            while not self.stop_event.is_set():
                timeout = STATUS_EVERY_S
                if end is not None:
                    timeout = min(timeout, end - time.monotonic())
                    if timeout <= 0:
                        break
                if not self.stop_event.wait(timeout) and on_status is not None:
                    on_status(self.status())
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)

    def registry_changed(self) -> None:
        """Ask for the registry to be rewritten (streams added, stale, generation)."""
        self._registry_dirty.set()

    def _housekeeping(self) -> None:
        """Rewrite the registry when it changed; refresh rates and status.json each second."""
        last = time.monotonic()
        while not self.stop_event.is_set():
            if self._registry_dirty.wait(STATUS_EVERY_S):
                self._registry_dirty.clear()
                self._write_registry()
            now = time.monotonic()
            if now - last >= STATUS_EVERY_S:
                with self._feeds_lock:
                    feeds = list(self.feeds.values())
                for f in feeds:
                    f.tick_rate(now - last)
                last = now
                registry.write_status(self.config.namespace, self.status())

    def status(self) -> dict[str, Any]:
        """Supervisor and per-stream status (the ``status.json`` content)."""
        with self._feeds_lock:
            feeds = dict(self.feeds)
        streams = {}
        for key, f in feeds.items():
            if f.ring is not None:
                streams[key] = {**f.entry(), **f.status()}
        return {
            "namespace": self.config.namespace,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "updated": time.time(),
            "streams": streams,
        }

    def _write_registry(self) -> None:
        with self._feeds_lock:
            streams = {k: f.entry() for k, f in self.feeds.items() if f.ring is not None}
        me = os.getpid()
        registry.write_registry(
            self.config.namespace,
            {
                "version": registry.REGISTRY_VERSION,
                "namespace": self.config.namespace,
                "pid": me,
                "pid_create_time": registry._pid_create_time(me),
                "started": self.started,
                "endpoints": {
                    "heads": self.heads.endpoint if self.heads else "",
                    "logs": self.logs.endpoint if self.logs else "",
                },
                "streams": streams,
            },
        )

    # -- resolution ---------------------------------------------------------------------
    def _resolve_loop(self) -> None:
        interval = self.config.resolve_interval_s
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                specs = lsl.resolve_streams(timeout=min(interval, 1.0))
            except Exception:
                log.exception("LSL resolution failed; retrying")
                specs = []
            seen = set()
            for spec in specs:
                sel = self.config.selects(spec.name, spec.type, spec.source_id)
                if sel is None:
                    continue
                key = stream_key(spec.name, spec.source_id, spec.hostname)
                seen.add(key)
                feed = self.feeds.get(key)
                if feed is None:
                    self._add_feed(key, spec, sel)
                else:
                    feed.offer(spec)
            for key, feed in list(self.feeds.items()):
                if key not in seen:
                    feed.missed()
            self.stop_event.wait(max(0.0, interval - (time.monotonic() - t0)))

    def _add_feed(self, key: str, spec: Any, sel: StreamSelector) -> None:
        gen = self._prev_generations.get(key, 0) + 1
        try:
            feed = _Feed(self, key, spec, sel, gen)
        except Exception as exc:
            log.error("cannot share stream %r (%s): %s", spec.name, spec.source_id, exc)
            return
        with self._feeds_lock:
            self.feeds[key] = feed
        feed.start()
        self.registry_changed()

    # -- shutdown -----------------------------------------------------------------------
    def close(self) -> None:
        """Stop every thread, unlink every ring, remove the registry (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.stop_event.set()
        for t in (self._resolver, self._keeper):
            if t is not None:
                t.join(JOIN_TIMEOUT_S + 1.0)
        with self._feeds_lock:
            feeds, self.feeds = list(self.feeds.values()), {}
        for f in feeds:
            f.close()
        ns = self.config.namespace
        if self._lock is not None:
            registry.remove_registry(ns)
            registry.remove_status(ns)
        if self._handler is not None:
            logging.getLogger("dpshm").removeHandler(self._handler)
            self._handler = None
        for pub in (self.heads, self.logs):
            if pub is not None:
                pub.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()
        log.info("supervisor on namespace %r stopped; %d ring(s) unlinked", ns, len(feeds))

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
