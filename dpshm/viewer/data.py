"""What the viewer shows, read from shared memory: the stream table and decimated windows.

A :class:`StreamBook` follows one namespace read-only: the supervisor's
``registry.json`` (re-read when its modification time changes), its
``status.json`` (measured rate, lag, lost samples) and every ring, attached
with :meth:`~dpshm.ring.SharedRing.attach` (``PROT_READ``: nothing here can
write a ring or unlink it). Nothing runs inside the supervisor's process.

Windows are decimated to min/max per pixel column (:mod:`dpshm.viewer.columns`,
which also describes the window reply's bytes).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from dpshm._logging import library_logger
from dpshm.errors import DpshmError, RingFormatError, RingNotFoundError, SupervisorNotRunningError
from dpshm.formats import decode_strings
from dpshm.shm import registry
from dpshm.shm.ring import SharedRing
from dpshm.viewer.columns import decimated_frame

log = library_logger(__name__)

#: Widest trace (pixel columns) a page may ask for.
MAX_WIDTH = 4096
#: Longest window (s) a page may ask for (also bounded by the ring's length).
MAX_SECONDS = 60.0
#: Most values (columns x channels) one window reply carries.
MAX_VALUES = 2_000_000
#: Newest rows of a marker stream searched for markers.
MARKER_ROWS = 256
#: Seconds between looks at the registry (its mtime, the supervisor's pid).
REFRESH_EVERY_S = 0.25
#: Seconds between checks that the supervisor of an unchanged registry still runs.
ALIVE_EVERY_S = 1.0
#: Most markers returned with a window.
MAX_MARKERS = 200
#: Longest marker label sent (characters).
MAX_LABEL = 80


class ViewerError(DpshmError, ValueError):
    """A request of the page is invalid (bad parameter, unknown or marker stream)."""


@dataclass(frozen=True)
class WindowRequest:
    """A validated window request of the page."""

    key: str
    seconds: float
    width: int
    since: int | None = None
    first_channel: int = 0
    n_channels: int | None = None

    @classmethod
    def from_query(cls, q: dict[str, str]) -> WindowRequest:
        """Build from URL query values; raises :class:`ViewerError` naming the bad one."""
        key = q.get("key")
        if not key:
            raise ViewerError("window request without key=: pass the stream's key")
        seconds = _number(q, "seconds", float, 5.0, 0.05, MAX_SECONDS)
        width = _number(q, "width", int, 800, 16, MAX_WIDTH)
        since = _number(q, "since", int, None, 0, 2**62)
        ch0 = _number(q, "ch0", int, 0, 0, 1 << 20)
        nch = _number(q, "nch", int, None, 1, 1 << 20)
        return cls(key, float(seconds), int(width), since, int(ch0), nch)


def _number(q: dict[str, str], name: str, kind: type, default: Any, lo: float, hi: float) -> Any:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ViewerError(f"{name}={raw!r} is not {what}") from None
    if not (lo <= value <= hi):  # also refuses NaN
        raise ViewerError(f"{name}={raw!r} is out of range; use {lo:g} to {hi:g}")
    return value


@dataclass(frozen=True)
class Shape:
    """How one window request maps onto its ring (see :meth:`StreamBook.shape`)."""

    ring: SharedRing
    spc: int
    n_cols: int
    first_channel: int
    n_channels: int
    samples: int

    def header(self, key: str) -> dict[str, Any]:
        """The fields of a full (``reset``) window header that depend on the shape only."""
        ring, ch0, nch = self.ring, self.first_channel, self.n_channels
        return {
            "key": key,
            "ring": ring.name,
            "generation": ring.generation,
            "srate": ring.srate,
            "spc": self.spc,
            "window_cols": self.n_cols,
            "seconds": self.samples / ring.srate if ring.srate > 0 else None,
            "first_channel": ch0,
            "n_channels": nch,
            "total_channels": ring.n_channels,
            "channel_names": ring.channel_names[ch0 : ch0 + nch],
        }


class StreamBook:
    """Read-only picture of a namespace: registry, live figures and rings.

    Thread-safe: the viewer's request threads share one book.

    Parameters
    ----------
    namespace : str
        The supervisor's namespace.
    """

    def __init__(self, namespace: str):
        self.namespace = namespace
        self._lock = threading.RLock()
        self._stamp: tuple[int, int] | bool | None = False  # registry stamp read (False: never)
        self._next_refresh = self._next_alive = 0.0
        self._reg: registry.Registry | None = None
        self._problem = ""
        self._rings: dict[str, SharedRing] = {}  # registry key -> attached ring
        self._marker_rings: tuple[SharedRing, ...] = ()  # attached string rings
        self._marker_cache: dict[str, tuple[int, list[dict[str, Any]]]] = {}

    # -- following the registry ---------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the registry if it changed; attach new rings, drop gone ones."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now < self._next_refresh:  # pages ask often: look 4 times a second
            return
        self._next_refresh = now + REFRESH_EVERY_S
        stamp = registry.registry_stamp(self.namespace)
        if stamp == self._stamp:
            if self._reg is None or now < self._next_alive:
                return
            self._next_alive = now + ALIVE_EVERY_S  # a killed one leaves its registry
            if self._reg.alive():
                return
        try:
            reg = registry.read_registry(self.namespace)
        except SupervisorNotRunningError as exc:
            self._reg, self._problem = None, str(exc)
            self._stamp = stamp
            self._drop(set())
            return
        self._reg, self._problem, self._stamp = reg, "", stamp
        for key, e in reg.streams.items():
            ring = self._rings.get(key)
            if ring is not None and ring.name == e.ring and not ring.closed:
                continue
            try:
                new = SharedRing.attach(e.ring)
            except (RingNotFoundError, RingFormatError) as exc:
                log.debug("cannot attach ring %r of %r yet: %s", e.ring, key, exc)
                self._stamp = None  # try again on the next refresh
                self._next_refresh = 0.0
                continue
            if ring is not None:
                self._close_ring(key, ring)
            self._rings[key] = new
        self._drop(set(reg.streams))

    def _drop(self, keep: set[str]) -> None:
        for key in [k for k in self._rings if k not in keep]:
            self._close_ring(key, self._rings.pop(key))
        self._marker_rings = tuple(r for r in self._rings.values() if r.string_width)

    def _close_ring(self, key: str, ring: SharedRing) -> None:
        self._marker_cache.pop(key, None)
        ring.close()

    # -- the stream table ---------------------------------------------------------------
    def table(self) -> dict[str, Any]:
        """The page's stream table: supervisor and one row per stream.

        Measured rate, lag and lost samples come from the supervisor's
        ``status.json`` (rewritten each second); head, stale and the writer's
        pid from the ring itself.
        """
        status = registry.read_status(self.namespace) or {}
        live = status.get("streams", {})
        with self._lock:
            self._refresh()
            reg = self._reg
            rows = []
            for key, ring in sorted(self._rings.items(), key=lambda kv: kv[1].name):
                e = reg.streams.get(key) if reg is not None else None
                info = dict(e.info) if e is not None else {}
                fig = live.get(key, {})
                rows.append(
                    {
                        "key": key,
                        "name": info.get("name", ring.name),
                        "type": info.get("type", ""),
                        "hostname": info.get("hostname", ""),
                        "source_id": info.get("source_id", ""),
                        "channels": ring.n_channels,
                        "format": ring.format,
                        "srate": ring.srate,
                        "measured_rate": _finite(fig.get("measured_rate")),
                        "lag_s": _finite(fig.get("lag_s")),
                        "lost": fig.get("lost"),
                        "head": ring.head,
                        "stale": ring.stale,
                        "writer_pid": ring.writer_pid,
                        "capacity": ring.capacity,
                        "generation": ring.generation,
                    }
                )
            sup = None
            if reg is not None:
                sup = {"pid": reg.pid, "started": reg.started}
            return {
                "namespace": self.namespace,
                "supervisor": sup,
                "problem": self._problem,
                "streams": rows,
            }

    # -- windows ------------------------------------------------------------------------
    def shape(self, req: WindowRequest) -> Shape:
        """Validate ``req`` against its ring (refreshing the registry first).

        Raises
        ------
        ViewerError
            Unknown key, a marker stream, a channel range or size out of bounds.
        """
        with self._lock:
            self._refresh()
            ring = self._rings.get(req.key)
        if ring is None:
            known = sorted(self._rings)
            raise ViewerError(f"no stream with key {req.key!r}; known keys: {known}")
        if ring.string_width:
            raise ViewerError(
                f"stream {req.key!r} holds strings (markers): ask /api/markers?key=..."
            )
        nch_all = ring.n_channels
        if req.first_channel >= nch_all:
            raise ViewerError(
                f"ch0={req.first_channel} but stream {req.key!r} has {nch_all} channels"
            )
        nch = min(req.n_channels or nch_all, nch_all - req.first_channel)
        if ring.srate > 0:
            samples = min(round(req.seconds * ring.srate), ring.capacity)
        else:
            samples = min(req.width, ring.capacity)
        spc = max(1, math.ceil(samples / req.width))
        n_cols = max(1, samples // spc)
        if n_cols * nch > MAX_VALUES:
            raise ViewerError(
                f"{n_cols} columns x {nch} channels exceeds the viewer's limit of "
                f"{MAX_VALUES} values per window: ask fewer channels (nch=) or a narrower "
                "width"
            )
        return Shape(ring, spc, n_cols, req.first_channel, nch, samples)

    @property
    def lock(self) -> threading.RLock:
        """Held while rings are read or dropped (re-entrant: the book's methods take it)."""
        return self._lock

    def endpoints(self) -> dict[str, str]:
        """The running supervisor's endpoints (its registry's; ``{}`` when none runs)."""
        with self._lock:
            self._refresh()
            return dict(self._reg.endpoints) if self._reg is not None else {}

    def current(self, key: str) -> SharedRing | None:
        """The ring now attached for ``key`` (None: gone), refreshing the registry first."""
        with self._lock:
            self._refresh()
            return self._rings.get(key)

    def window(self, req: WindowRequest) -> tuple[dict[str, Any], bytearray]:
        """Decimated window of a numeric stream: ``(header, body)`` (see module docstring).

        With ``req.since`` inside the window, only the columns from ``since`` on.
        """
        with self._lock:
            return self._window(req)

    def _window(self, req: WindowRequest) -> tuple[dict[str, Any], bytearray]:
        sh = self.shape(req)
        ring, spc = sh.ring, sh.spc
        end = ring.head // spc
        first = max(0, end - sh.n_cols)
        if req.since is not None and first < req.since <= end:
            first = req.since
        toff = ring.time_offset
        reset = req.since is None or first != req.since
        header = sh.header(req.key) if reset else {"n_channels": sh.n_channels}
        header.update(
            first_col=first, end_col=end, n_cols=end - first, time_offset=toff,
            head=ring.head, stale=ring.stale, reset=reset,
        )  # fmt: skip
        marks = self.window_markers(sh, end)
        if marks:
            header["markers"] = marks
        body = decimated_frame(header, ring, first, end, spc, sh.first_channel, sh.n_channels)
        return header, body

    # -- markers ------------------------------------------------------------------------
    def markers(self, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` markers of one string stream, newest last."""
        with self._lock:
            self._refresh()
            ring = self._rings.get(key)
            if ring is None or not ring.string_width:
                raise ViewerError(f"no marker (string) stream with key {key!r}")
            return self._recent(key, ring)[-max(1, min(limit, MARKER_ROWS)) :]

    def markers_after(self, t0: float) -> list[dict[str, Any]]:
        """Markers of every marker (string) stream at ``t0`` or later, oldest first."""
        with self._lock:
            out: list[dict[str, Any]] = []
            for key, ring in self._rings.items():
                if ring.string_width:
                    out += [m for m in self._recent(key, ring) if m["t"] >= t0]
        out.sort(key=lambda m: m["t"])
        return out[-MAX_MARKERS:]

    def window_markers(self, sh: Shape, end: int) -> list[dict[str, Any]]:
        """Markers from the oldest column of ``sh``'s window ending at column ``end`` on."""
        if end <= 0:
            return []
        ring, spc = sh.ring, sh.spc
        t0 = ring.window(1, max(0, end - sh.n_cols) * spc + spc)[1][0] + ring.time_offset
        return self.markers_after(float(t0))

    def marker_heads(self) -> tuple[int, ...]:
        """Heads of the marker streams: changes when a marker arrives or a stream comes or goes."""
        rings = self._marker_rings
        return tuple(r.head for r in rings) if rings else ()

    def _recent(self, key: str, ring: SharedRing) -> list[dict[str, Any]]:
        head = ring.head
        cached = self._marker_cache.get(key)
        if cached is not None and cached[0] == head:
            return cached[1]
        n = min(head, ring.capacity, MARKER_ROWS)
        d, t, _ = ring.copy_range(head - n, head)
        toff = ring.time_offset
        name = self._name(key, ring)
        labels = decode_strings(d) if d is not None and len(d) else []
        out = [
            {"stream": name, "t": float(ts) + toff, "label": " | ".join(map(str, row))[:MAX_LABEL]}
            for row, ts in zip(labels, t if t is not None else [], strict=False)
        ]
        self._marker_cache[key] = (head, out)
        return out

    def _name(self, key: str, ring: SharedRing) -> str:
        e = self._reg.streams.get(key) if self._reg is not None else None
        return e.name if e is not None else ring.name

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Detach every ring (idempotent)."""
        with self._lock:
            self._drop(set())
            self._reg = None
            self._stamp = False
            self._next_refresh = 0.0

    def __enter__(self) -> StreamBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
