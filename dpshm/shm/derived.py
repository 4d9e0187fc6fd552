"""Streams published by processes (:func:`dpshm.publish_stream`): the supervisor's side.

A publishing process (the *producer*) creates and writes its ring itself -- it is
the ring's one writer -- and rings its consumers' doorbells and publishes head
updates itself, from its own :class:`~dpshm.shm.doorbell.DoorbellServer` and
:class:`~dpshm.shm.bus.HeadPublisher` (no extra hop through the supervisor). The
supervisor only lists the stream in its registry, with the producer's pid and
wake-up endpoints, and watches the producer's life.

Requests (over :mod:`dpshm.shm.requests`, one connection per publisher)::

    {"op": "claim", "name", "type", "source_id", "hostname", "channels",
     "format", "srate", "capacity"[, "ring", "generation"]}
        -> {"ok": true, "key", "ring", "generation", "transport"}
    {"op": "ready", "key", "endpoints": {"doorbell": ..., "heads": ...}}
        -> {"ok": true}            the ring exists: the stream is listed now
    {"op": "close", "key"}
        -> {"ok": true}            the producer stops: stale, it unlinks its ring

``claim`` reserves the name: it is refused (``"kind": "name_taken"``) when a
stream fed from LSL has that name, or another stream published under that
name is live. A producer that comes back (same name and source_id, hence the
same registry key) after its predecessor ended gets the same key; with the
same format (channels, channel format, rate) the same generation, with another
format the next generation. A ring named in ``claim`` is re-registered as it is
(the producer outlived a supervisor restart).

Who unlinks: only the creator unlinks its ring, with one exception. When a
producer's connection ends without ``close`` (it exited or was SIGKILLed), the
supervisor flags its ring stale (:func:`~dpshm.shm.ring.mark_stale`) and, once
the producer's pid is dead, unlinks the ring for it. Readers still attached
keep their mapping and see the stale flag. A live producer's ring is never
touched: ``dpshm down`` and ``dpshm up`` remove only rings of dead writers.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dpshm._logging import library_logger
from dpshm.dareplane.procs import pid_alive, start_time
from dpshm.formats import FORMATS
from dpshm.shm.feed import stream_key
from dpshm.shm.registry import StreamEntry
from dpshm.shm.ring import SharedRing, mark_stale, segment_name
from dpshm.shm.segment import unlink_segment

log = library_logger(__name__)

_ENDPOINT_RE = re.compile(r"^(dpshm-[\w.-]+|ipc://[^\s]+|tcp://127\.0\.0\.1:\d+)$")


@dataclass
class _Published:
    """One published stream as the supervisor tracks it."""

    entry: StreamEntry
    conn: int | None  # request connection of its live producer (None: ended)
    pid: int
    started: float | None
    ring: SharedRing | None = None  # attached read-only while live (status figures)
    last_head: int = 0
    rate: float = 0.0
    pending: tuple[StreamEntry, str] | None = None  # claimed: (entry, ring) until ready
    reason: str = ""  # why it is stale


def _fmt(d: Any) -> tuple[int, str, float]:
    return (int(d["channels"]), str(d["format"]), float(d["srate"]))


class PublishedStreams:
    """The published streams of one supervisor (thread-safe).

    Parameters
    ----------
    namespace : str
        The supervisor's namespace (first part of every ring name).
    transport : str
        ``"ipc"`` or ``"tcp"``: what the producers' head publishers bind.
    lsl_holder : callable
        ``name -> description`` of the LSL-fed stream holding ``name``, or None.
    prev_generations : dict
        Registry key -> generation a dead predecessor supervisor had listed.
    on_change : callable
        ``()`` when the registry must be rewritten now (called synchronously,
        so a publisher's stream is listed when ``ready`` is answered).
    """

    def __init__(
        self,
        namespace: str,
        transport: str,
        lsl_holder: Callable[[str], str | None],
        prev_generations: dict[str, int],
        on_change: Callable[[], None],
    ):
        self.namespace = namespace
        self.transport = transport
        self._lsl_holder = lsl_holder
        self._prev = prev_generations
        self._on_change = on_change
        self._lock = threading.RLock()
        self._streams: dict[str, _Published] = {}
        self._orphans: dict[str, tuple[int, float | None]] = {}  # ring -> dead-to-be writer

    # -- what the supervisor asks -------------------------------------------------------
    def entries(self) -> dict[str, StreamEntry]:
        """Registry entries of every published stream (live and stale)."""
        with self._lock:
            return {k: p.entry for k, p in self._streams.items() if p.entry.ring}

    def holds(self, key: str) -> bool:
        """True if ``key`` is a published stream (the resolver skips its LSL mirror)."""
        return key in self._streams

    def status(self) -> dict[str, dict[str, Any]]:
        """Live figures per stream, as :meth:`dpshm.shm.feed.Feed.status` gives them."""
        out = {}
        with self._lock:
            for key, p in self._streams.items():
                if not p.entry.ring:
                    continue
                ring = p.ring
                out[key] = {
                    **p.entry.to_json(),
                    "head": ring.head if ring is not None and not ring.closed else p.last_head,
                    "measured_rate": round(p.rate, 3),
                    "lag_s": None,
                    "lost": 0,
                    "state": "STALE" if p.entry.stale else "ok",
                    "reason": p.reason if p.entry.stale else "",
                }
        return out

    # -- requests -----------------------------------------------------------------------
    def handle(self, conn: int, pid: int, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one request of a producer (see the module docstring)."""
        op = req.get("op")
        try:
            if op == "claim":
                return self._claim(conn, pid, req)
            if op == "ready":
                return self._ready(conn, pid, req)
            if op == "close":
                self._end(conn, graceful=True)
                return {"ok": True}
        except (KeyError, TypeError, ValueError) as exc:
            return _refuse("bad_request", f"malformed {op!r} request: {exc!r}")
        return _refuse("bad_request", f"unknown op {op!r}; use claim, ready or close")

    def _claim(self, conn: int, pid: int, req: dict[str, Any]) -> dict[str, Any]:
        name = str(req["name"])
        source_id = str(req["source_id"])
        fmt = _fmt(req)
        if fmt[1] not in FORMATS or fmt[0] < 1 or fmt[2] < 0:
            raise ValueError(f"format {fmt} (channels, format, srate)")
        key = stream_key(name, source_id)
        holder = self._lsl_holder(name)
        if holder is not None:
            return _refuse(
                "name_taken",
                f"the name {name!r} is held by {holder}; publish under another name",
            )
        with self._lock:
            for other in self._streams.values():
                e = other.entry
                if e.name == name and (e.key != key or other.conn not in (None, conn)):
                    return _refuse(
                        "name_taken",
                        f"the name {name!r} is held by a stream published by pid "
                        f"{e.producer_pid} (source_id {e.source_id!r}); stop that process "
                        "or publish under another name",
                    )
            old = self._streams.get(key)
            if req.get("ring"):  # re-registration of a live ring (supervisor restarted)
                ring_name, gen = str(req["ring"]), int(req["generation"])
                if not ring_name.startswith(f"{self.namespace}.{key}."):
                    raise ValueError(f"ring {ring_name!r} is not a ring of stream {key!r}")
                self._orphans.pop(ring_name, None)  # its writer lives and claims it again
            else:
                if old is not None:
                    same = _fmt(old.entry.to_json()) == fmt
                    gen = old.entry.generation if same else old.entry.generation + 1
                else:
                    gen = self._prev.get(key, 0) + 1
                token = f"{pid:x}{os.urandom(4).hex()}"  # unguessable: nobody creates it first
                ring_name = f"{self.namespace}.{key}.{token}.g{gen}"
            entry = StreamEntry(
                key=key,
                name=name,
                type=str(req.get("type", "")),
                source_id=source_id,
                hostname=str(req.get("hostname", "")),
                generation=gen,
                channels=fmt[0],
                format=fmt[1],
                srate=fmt[2],
                capacity=int(req["capacity"]),
                producer_pid=pid,
            )
            if old is not None and old.entry.ring:  # keep listing the old ring until ready
                self._forget_ring(old)
                old.conn, old.pid = conn, pid
                old.started = start_time(pid)
                old.pending = (entry, ring_name)
            else:
                self._streams[key] = _Published(
                    replace(entry, ring=""),
                    conn,
                    pid,
                    start_time(pid),
                    pending=(entry, ring_name),
                )
        return {
            "ok": True,
            "key": key,
            "ring": ring_name,
            "generation": gen,
            "transport": self.transport,
        }

    def _ready(self, conn: int, pid: int, req: dict[str, Any]) -> dict[str, Any]:
        key = str(req["key"])
        endpoints = {str(k): str(v) for k, v in dict(req.get("endpoints") or {}).items()}
        for k, v in endpoints.items():
            if k not in ("doorbell", "heads") or not _ENDPOINT_RE.match(v):
                raise ValueError(f"endpoint {k}={v!r}")
        with self._lock:
            p = self._streams.get(key)
            pending = None if p is None else p.pending
            if p is None or p.conn != conn or pending is None:
                return _refuse("bad_request", f"no claim of stream {key!r} on this connection")
            entry, ring_name = pending
            try:
                ring = SharedRing.attach(ring_name)
            except LookupError as exc:
                return _refuse("bad_request", f"ring {ring_name!r} cannot be attached: {exc}")
            got = (ring.n_channels, ring.format, ring.srate)
            if got != (entry.channels, entry.format, entry.srate) or (
                pid and ring.writer_pid != pid
            ):
                ring.close()
                return _refuse(
                    "bad_request",
                    f"ring {ring_name!r} (format {got}, writer pid {ring.writer_pid}) is not "
                    f"the ring claimed (format {_fmt(entry.to_json())}, pid {pid})",
                )
            p.entry = replace(
                entry, ring=ring_name, capacity=ring.capacity, endpoints=endpoints, stale=False
            )
            p.ring, p.last_head, p.pending = ring, ring.head, None
        log.info(
            "stream %r published by pid %d -> ring %r, generation %d",
            entry.name, pid, ring_name, entry.generation,
        )  # fmt: skip
        self._on_change()
        return {"ok": True}

    # -- producers ending -----------------------------------------------------------------
    def disconnected(self, conn: int, pid: int) -> None:
        """A producer's request connection ended (it closed, exited or was killed)."""
        self._end(conn, graceful=False)

    def _end(self, conn: int, graceful: bool) -> None:
        changed = False
        with self._lock:
            for key, p in list(self._streams.items()):
                if p.conn != conn:
                    continue
                p.conn = None
                if p.pending is not None:  # claimed, never ready: a ring it may have made
                    self._orphans[p.pending[1]] = (p.pid, p.started)
                    p.pending = None
                if not p.entry.ring:  # nothing was listed
                    del self._streams[key]
                    continue
                if not p.entry.stale:
                    self._go_stale(p, graceful)
                    changed = True
        if changed:
            self._on_change()
        self.sweep_orphans()

    def _go_stale(self, p: _Published, graceful: bool) -> None:
        if p.ring is not None:
            p.last_head = p.ring.head
        p.entry = replace(p.entry, stale=True)
        p.rate = 0.0
        p.reason = f"producer pid {p.pid} {'closed it' if graceful else 'is gone'}"
        if not graceful:  # it cannot flag its ring itself any more
            mark_stale(p.entry.ring)
            self._orphans[p.entry.ring] = (p.pid, p.started)
        self._forget_ring(p)
        log.warning(
            "stream %r: its producer (pid %d) %s; stale until it publishes again",
            p.entry.name, p.pid, "stopped" if graceful else "is gone",
        )  # fmt: skip

    @staticmethod
    def _forget_ring(p: _Published) -> None:
        ring, p.ring = p.ring, None
        if ring is not None:
            ring.close()

    def sweep_orphans(self) -> list[str]:
        """Unlink the rings of producers that died without unlinking; returns them."""
        removed = []
        with self._lock:
            for ring, (pid, ct) in list(self._orphans.items()):
                if pid_alive(pid, ct):
                    continue
                del self._orphans[ring]
                if unlink_segment(segment_name(ring)):
                    removed.append(ring)
                    log.warning("removed ring %r of dead producer pid %d", ring, pid)
        return removed

    def check(self, dt: float) -> None:
        """Housekeeping (each second).

        Rates, producers dead with their connection open (a forked child inherited it),
        orphaned rings.
        """
        changed = False
        with self._lock:
            for p in self._streams.values():
                if p.ring is not None and not p.ring.closed:
                    head = p.ring.head
                    p.rate = (head - p.last_head) / dt if dt > 0 else 0.0
                    p.last_head = head
                live = p.conn is not None and p.entry.ring and not p.entry.stale
                if live and not pid_alive(p.pid, p.started):
                    p.conn = None
                    self._go_stale(p, graceful=False)
                    changed = True
        if changed:
            self._on_change()
        self.sweep_orphans()

    def close(self) -> None:
        """Detach every ring; unlink those of dead producers (live ones keep theirs)."""
        with self._lock:
            for p in self._streams.values():
                self._forget_ring(p)
                if p.entry.ring and not pid_alive(p.pid, p.started):
                    self._orphans[p.entry.ring] = (p.pid, p.started)  # end not seen yet
        self.sweep_orphans()


def _refuse(kind: str, message: str) -> dict[str, Any]:
    from dpshm.shm.requests import error_reply

    log.warning("publish request refused: %s", message)
    return error_reply(kind, message)
