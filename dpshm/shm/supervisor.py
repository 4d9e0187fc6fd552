"""The supervisor behind ``dpshm up``: LSL streams -> shared-memory rings -> ZeroMQ.

One :class:`Supervisor` per namespace (an flock in the runtime directory
enforces it). It

* resolves LSL streams every ``resolve_interval_s`` and starts one
  :class:`~dpshm.shm.feed.Feed` (a thread with one inlet and one ring) per selected stream;
* pulls with ``dest_obj`` into a preallocated chunk buffer, writes the chunk into
  the ring, rings the doorbell of every local consumer of that stream
  (:mod:`dpshm.shm.doorbell`, Linux) and publishes a head update (stream, head,
  generation, newest timestamp) on the ZeroMQ bus (tools, other hosts, non-Linux);
* marks a stream stale (ring header flag + registry) when its outlet vanishes,
  keeps the ring, and resumes writing when an outlet with the same source_id
  returns; a changed format (channels, channel format, rate) gets a new ring
  with the next generation, and consumers re-attach on their next update;
* publishes the LSL ``time_correction`` of each inlet in the ring header
  (``time_offset``) and the registry: rings hold timestamps as sent by the
  outlet; ``timestamp + time_offset`` is the local LSL clock;
* lists the streams that processes publish (:func:`dpshm.publish_stream`,
  :mod:`dpshm.shm.derived`): they register over the request socket
  (:mod:`dpshm.shm.requests`); the supervisor watches their producers' lives
  and skips their LSL mirrors when resolving;
* on start removes the segments a killed predecessor left behind (not the rings
  of live producers); on stop (SIGINT/SIGTERM, :meth:`Supervisor.stop`) unlinks
  every ring it created.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from dpshm import lsl
from dpshm._logging import library_logger
from dpshm._threads import join_thread
from dpshm.config import (
    MAX_INLET_BUFLEN_S,
    WORKER_SOURCE_PREFIX,
    StreamSelector,
    SupervisorConfig,
)
from dpshm.shm import registry
from dpshm.shm.bus import HeadPublisher, LogPublisher, ZmqLogHandler
from dpshm.shm.cpu import check_platform
from dpshm.shm.derived import PublishedStreams
from dpshm.shm.doorbell import AVAILABLE as DOORBELLS
from dpshm.shm.doorbell import DoorbellServer, control_address
from dpshm.shm.feed import JOIN_TIMEOUT_S, Feed, FeedEnv, stream_key
from dpshm.shm.requests import REQUESTS_FILE, RequestServer
from dpshm.shm.ring import SEGMENT_PREFIX, SHM_DIR, ring_info, unlink_ring
from dpshm.shm.segment import owned_by_me

log = library_logger(__name__)

STATUS_EVERY_S = 1.0
RESOLVE_WAIT_S = 0.5  # one LSL resolve round: outlets answer in milliseconds, even on a LAN;
# shorter than the 1 s interval so that stopping waits at most this long for the resolver.
# (liblsl's continuous resolver would not block at all, but it lists a live outlet only
# within ~1.3 s of its last answer, which would turn quiet marker streams stale.)


def sweep_dead(namespace: str) -> tuple[dict[str, Any] | None, list[tuple[str, int]]]:
    """Remove the registry and ring segments a killed supervisor of ``namespace`` left.

    Call only while holding the namespace's :class:`~dpshm.shm.registry.SupervisorLock`
    (so no live supervisor owns them). Each removal is logged as a warning.

    Returns
    -------
    registry : dict | None
        The dead supervisor's registry as written (None if there was none).
    removed : list of (segment, bytes)
        The segments removed and their sizes.
    """
    old = registry.read_registry_raw(namespace)
    if old:
        registry.remove_registry(namespace)
    prefix = f"{SEGMENT_PREFIX}{namespace}."
    try:
        # another user's segments are never ours to remove (nor to trust)
        leftovers = sorted(
            e for e in os.listdir(SHM_DIR) if e.startswith(prefix) and owned_by_me(e)
        )
    except OSError:
        leftovers = []
    removed = []
    for seg in leftovers:
        try:  # the writer pid in the ring header names the dead supervisor
            info = ring_info(seg)
            pid = info["writer_pid"]
        except Exception:  # not a complete ring (killed while creating it)
            pid, info = (old or {}).get("pid", "unknown"), {}
        if info.get("writer_alive") and info["meta"].get("producer"):
            continue  # a live publishing process owns it (and registers it again)
        try:
            size = os.stat(os.path.join(SHM_DIR, seg)).st_size
        except OSError:
            size = 0
        if unlink_ring(seg, force=True):
            removed.append((seg, size))
            who = "publishing process" if info.get("meta", {}).get("producer") else "supervisor"
            log.warning(
                "removed shared-memory segment %r left by a dead %s (pid %s)", seg, who, pid
            )
    return old, removed


class Supervisor:
    """Shares LSL streams through shared-memory rings; see the module docstring.

    Use as a context manager or call :meth:`start` / :meth:`close`;
    :meth:`run` blocks until :meth:`stop`, SIGINT/SIGTERM or ``duration``.

    Parameters
    ----------
    config : SupervisorConfig
        From :func:`dpshm.config.load_config`.
    """

    _lock: registry.SupervisorLock | None = None
    heads: HeadPublisher | None = None
    logs: LogPublisher | None = None
    doorbell: DoorbellServer | None = None
    requests: RequestServer | None = None
    published: PublishedStreams | None = None
    _handler: ZmqLogHandler | None = None
    _closed = True

    def __init__(self, config: SupervisorConfig):
        self.config = config
        self.stop_event = threading.Event()
        self.feeds: dict[str, Feed] = {}
        self._feeds_lock = threading.Lock()
        self._registry_dirty = threading.Event()
        self._registry_lock = threading.Lock()  # one snapshot-and-write at a time
        self._registered: frozenset[str] = frozenset()  # the keys the registry lists
        self._resolver: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        # in every ring name; random, so that nobody can create our segments ahead of us
        self.run_id = os.urandom(3).hex()
        self._prev_generations: dict[str, int] = {}
        self._clash_logged: set[str] = set()
        self._claimed_twice_seen: set[frozenset[str]] = set()  # outlet uid pairs logged
        self.started = 0.0
        self._served: dict[str, str] = {}  # endpoints served beside it (see add_endpoints)

    def add_endpoints(self, endpoints: dict[str, str]) -> None:
        """List endpoints served beside the supervisor in its registry (``endpoints``).

        The command server (:class:`~dpshm.control.commands.SupervisorFrontend`)
        adds ``"commands"`` (``tcp://HOST:PORT``) and ``"commands_auth"``
        (``"token"`` or ``"none"``; never the token), so that ``dpshm view``
        finds it. An empty value removes the endpoint. Written at once when the
        supervisor runs, else at :meth:`start`.
        """
        with self._registry_lock:
            for k, v in endpoints.items():
                if v:
                    self._served[k] = v
                else:
                    self._served.pop(k, None)
        if self.started and not self._closed:
            self._write_registry()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> Supervisor:
        """Take the namespace lock, clean up, bind the bus, start resolving.

        Raises
        ------
        SupervisorRunningError
            Another supervisor runs on this namespace.
        UnsupportedPlatformError
            The ring is not safe on this CPU (see :mod:`dpshm.shm.cpu`).
        """
        check_platform()
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
            if DOORBELLS:
                try:
                    self.doorbell = DoorbellServer(
                        control_address(ns, self.run_id),
                        max_subscribers=self.config.max_subscribers,
                        accept=self._shares,
                    )
                except OSError as exc:  # consumers then wake on ZeroMQ
                    log.warning("no doorbells (%s); consumers wake on ZeroMQ", exc)
            self.published = PublishedStreams(
                ns,
                self.config.transport,
                self._lsl_holder,
                self._prev_generations,
                self._write_registry,
            )
            self.requests = RequestServer(
                nsdir / REQUESTS_FILE, self.published.handle, self.published.disconnected
            )
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
        old, _ = sweep_dead(self.config.namespace)
        if old:
            for key, s in dict(old.get("streams", {})).items():
                self._prev_generations[key] = int(s.get("generation", 0))

    def inlet_buflen(self) -> int:
        """Seconds (hundreds of samples if irregular) the LSL inlet queues.

        Bounded by :data:`~dpshm.config.MAX_INLET_BUFLEN_S` whatever the ring's
        length: the inlet only bridges the feed thread's pauses, and a huge
        queue makes the outlet's process (the amplifier's) spin.
        """
        return min(max(int(self.config.buffer_s) + 1, 2), MAX_INLET_BUFLEN_S)

    def _shares(self, key: str) -> bool:
        """Whether ``key`` is a stream this supervisor shares (doorbell subscriptions)."""
        return key in self.feeds

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
                if self.stop_event.is_set():
                    return  # woken by close()
                self._registry_dirty.clear()
                self._write_registry()
            now = time.monotonic()
            if now - last >= STATUS_EVERY_S:
                with self._feeds_lock:
                    feeds = list(self.feeds.values())
                for f in feeds:
                    f.tick_rate(now - last)
                if self.published is not None:
                    self.published.check(now - last)
                last = now
                registry.write_status(self.config.namespace, self.status())

    def status(self) -> dict[str, Any]:
        """Supervisor and per-stream status (the ``status.json`` content)."""
        with self._feeds_lock:
            feeds = dict(self.feeds)
        streams = {}
        for key, f in feeds.items():
            if f.ring is not None:
                streams[key] = {**f.entry().to_json(), **f.status()}
        if self.published is not None:
            streams.update(self.published.status())
        if not streams.keys() <= self._registered:
            # the housekeeping thread has not listed it yet: whoever is told of a stream
            # (LIST_STREAMS, a worker's start) must find it in the registry at once
            self._write_registry(unless_listed=streams.keys())
        return {
            "namespace": self.config.namespace,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "updated": time.time(),
            "streams": streams,
        }

    def _write_registry(self, unless_listed: Collection[str] | None = None) -> None:
        """Write ``registry.json`` from the current streams.

        With ``unless_listed``: only if the registry lacks one of these keys, and
        never once :meth:`close` began (it removes the registry).
        """
        with self._registry_lock:
            if unless_listed is not None and (
                self._closed or set(unless_listed) <= self._registered
            ):
                return
            with self._feeds_lock:
                streams = {k: f.entry() for k, f in self.feeds.items() if f.ring is not None}
            if self.published is not None:
                streams.update(self.published.entries())
            endpoints = {
                "heads": self.heads.endpoint if self.heads else "",
                "logs": self.logs.endpoint if self.logs else "",
            }
            if self.doorbell is not None:
                endpoints["doorbell"] = self.doorbell.address
            if self.requests is not None:
                endpoints["requests"] = str(self.requests.path)
            endpoints.update(self._served)
            registry.write_registry(
                registry.Registry.for_this_process(
                    self.config.namespace,
                    started=self.started,
                    endpoints=endpoints,
                    streams=streams,
                )
            )
            self._registered = frozenset(streams)

    def _lsl_holder(self, name: str) -> str | None:
        """Who holds ``name`` among the streams fed from LSL (None: nobody)."""
        with self._feeds_lock:
            for f in self.feeds.values():
                if f.spec.name == name:
                    return f"the LSL stream {name!r} (source_id {f.spec.source_id!r})"
        return None

    # -- resolution ---------------------------------------------------------------------
    def _resolve_loop(self) -> None:
        """Resolve LSL streams every ``resolve_interval_s``."""
        interval = self.config.resolve_interval_s
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                specs = lsl.resolve_streams(timeout=min(interval, RESOLVE_WAIT_S))
            except Exception:
                log.exception("LSL resolution failed; retrying")
                specs = []
            if self.stop_event.is_set():
                return
            self._resolved(specs)
            self.stop_event.wait(max(0.0, interval - (time.monotonic() - t0)))

    def _resolved(self, specs: list[Any]) -> None:
        """One look at the visible outlets: new feeds, feeds offered or missed."""
        seen: dict[str, Any] = {}
        # other outlets first: a worker's outlet never takes a name before them
        specs = sorted(specs, key=lambda sp: str(sp.source_id).startswith(WORKER_SOURCE_PREFIX))
        for spec in specs:
            sel = self.config.selects(spec.name, spec.type, spec.source_id)
            if sel is None:
                continue
            key = stream_key(spec.name, spec.source_id, spec.hostname)
            if self.published is not None and self.published.holds(key):
                continue  # the LSL mirror of a stream published here: listed already
            if key in seen:  # a second outlet with the identity of one already seen
                self._claimed_twice(seen[key], spec)
                continue
            seen[key] = spec
            feed = self.feeds.get(key)
            if feed is None and self._clashes(key, spec):
                continue
            if feed is None:
                self._add_feed(key, spec, sel)
            else:
                feed.offer(spec)
        for key, feed in list(self.feeds.items()):
            if key not in seen:
                feed.missed()

    def _clashes(self, key: str, spec: Any) -> bool:
        """A worker's outlet whose name another shared stream holds is not shared.

        Consumers then never meet two streams of one name because of a worker
        (``AmbiguousStreamError``); the worker's START_WORKER is refused up
        front, this catches a worker that publishes under another name.
        """
        if not str(spec.source_id).startswith(WORKER_SOURCE_PREFIX):
            return False
        holder = next(
            (k for k, f in self.feeds.items() if f.spec.name == spec.name and k != key), None
        )
        if holder is None:
            return False
        if key not in self._clash_logged:
            self._clash_logged.add(key)
            log.error(
                "not sharing %r from worker source %r: stream %r already has that name",
                spec.name, spec.source_id, holder,
            )  # fmt: skip
        return True

    def _claimed_twice(self, first: Any, other: Any) -> None:
        """Log (once per pair of outlets) that two outlets claim one stream identity."""
        pair = frozenset((first.uid, other.uid))  # the resolver may list them in any order
        if pair in self._claimed_twice_seen:
            return
        self._claimed_twice_seen.add(pair)
        ident = f"source_id {first.source_id!r}" if first.source_id else "no source_id"
        log.warning(
            "two LSL outlets named %r claim the same identity (%s): one on host %r (uid %s), "
            "one on host %r (uid %s); dpshm shares only one of them. Give each outlet its own "
            "source_id.",
            first.name, ident, first.hostname, first.uid, other.hostname, other.uid,
        )  # fmt: skip

    def _feed_env(self) -> FeedEnv:
        cfg = self.config
        return FeedEnv(
            namespace=cfg.namespace,
            run_id=self.run_id,
            capacity_for=cfg.buffer_for,
            string_width=cfg.string_width,
            resolve_interval_s=cfg.resolve_interval_s,
            inlet_buflen=self.inlet_buflen(),
            stop_event=self.stop_event,
            on_write=self._wake_consumers,
            on_change=self.registry_changed,
        )

    def _wake_consumers(self, key: str, head: int, generation: int, newest: float) -> None:
        """After a feed wrote a chunk: ring the doorbells, publish the head update."""
        bell = self.doorbell
        if bell is not None:
            bell.ring(key, generation)
        self.heads.publish(key, head, generation, newest)

    def _add_feed(self, key: str, spec: Any, sel: StreamSelector) -> None:
        gen = self._prev_generations.get(key, 0) + 1
        try:
            feed = Feed(self._feed_env(), key, spec, sel, gen)
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
        self._registry_dirty.set()  # wakes the housekeeping thread
        for t in (self._resolver, self._keeper):
            join_thread(t, JOIN_TIMEOUT_S + 1.0)
        if self.requests is not None:
            self.requests.close()
        if self.published is not None:
            self.published.close()
        with self._feeds_lock:
            feeds, self.feeds = list(self.feeds.values()), {}
        for f in feeds:
            f.close()
        ns = self.config.namespace
        if self._lock is not None:
            with self._registry_lock:  # after any write status() began
                registry.remove_registry(ns)
            registry.remove_status(ns)
        if self._handler is not None:
            logging.getLogger("dpshm").removeHandler(self._handler)
            self._handler = None
        for pub in (self.heads, self.logs):
            if pub is not None:
                endpoint = pub.endpoint
                pub.close()
                if endpoint.startswith("ipc://"):  # the socket file stays behind otherwise
                    with contextlib.suppress(OSError):
                        os.unlink(endpoint[len("ipc://") :])
        if self.doorbell is not None:
            self.doorbell.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()
        log.info("supervisor on namespace %r stopped; %d ring(s) unlinked", ns, len(feeds))

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
