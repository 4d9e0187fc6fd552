"""Where a supervisor announces itself: runtime directory, lock and registry file.

Layout (one directory per namespace, mode 0700)::

    $XDG_RUNTIME_DIR/dpshm/<namespace>/     (or /tmp/dpshm-<uid>/<namespace>/)
        supervisor.lock   flock held by the running supervisor; holds its pid
        registry.json     written atomically (temp file + rename) on structural changes
        status.json       live figures (head, rates, lag, lost), rewritten each second
        heads.ipc         ZeroMQ PUB endpoint of head updates (transport ipc)
        logs.ipc          ZeroMQ PUB endpoint of JSON log records

The lock is an ``flock`` on ``supervisor.lock``: the kernel drops it when the
holder dies, even by SIGKILL, so a crashed supervisor never blocks the next one.

``registry.json`` (version 1)::

    {
      "version": 1,
      "namespace": "default",
      "pid": 1234, "pid_create_time": 1700000000.12,   # supervisor process
      "started": 1700000000.5,                         # time.time()
      "updated": 1700000003.5,
      "endpoints": {"heads": "ipc://...", "logs": "ipc://...",
                    "doorbell": "dpshm-1000-default-4242-1a2b3c"},  # Linux: abstract
                                                     # address, see dpshm.shm.doorbell
      "streams": {
        "<key>": {                                   # key: unique per source
          "name": "eeg", "type": "EEG", "source_id": "amp-1", "hostname": "...",
          "ring": "dpshm_default.eeg.ab12cd.g1",     # shared-memory segment
          "generation": 1, "channels": 64, "dtype": "float32",
          "srate": 1000.0, "time_offset": 0.0001,    # inlet.time_correction()
          "stale": false, "capacity": 10000, "format": "float32"
        }
      }
    }

``registry.json`` only changes when a stream appears, goes stale or comes back, or
changes generation, so a consumer can detect changes with one ``stat()``. The
live figures (head, measured_rate, lag_s, lost) are in ``status.json``, rewritten
about once a second (``dpshm ls``); consumers read live heads from the rings.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dpshm._logging import library_logger
from dpshm.config import namespace_from_env, validate_namespace
from dpshm.errors import (
    AmbiguousStreamError,
    StreamNotFoundError,
    SupervisorNotRunningError,
    SupervisorRunningError,
)

log = library_logger(__name__)

REGISTRY_VERSION = 1
ENV_RUNTIME_DIR = "XDG_RUNTIME_DIR"
LOCK_FILE = "supervisor.lock"
REGISTRY_FILE = "registry.json"
STATUS_FILE = "status.json"


def runtime_dir(create: bool = True) -> Path:
    """The per-user runtime directory: ``$XDG_RUNTIME_DIR/dpshm`` or ``/tmp/dpshm-<uid>``."""
    base = os.environ.get(ENV_RUNTIME_DIR)
    path = Path(base) / "dpshm" if base else Path(tempfile.gettempdir()) / f"dpshm-{os.getuid()}"
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def namespace_dir(namespace: str | None = None, create: bool = True) -> Path:
    """Directory of one namespace (default: ``$DPSHM_NAMESPACE`` or ``default``)."""
    ns = namespace_from_env() if namespace is None else validate_namespace(namespace)
    path = runtime_dir(create) / ns
    if create:
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def _pid_create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):
        return None


def process_alive(pid: int, create_time: float | None = None) -> bool:
    """True if ``pid`` runs (and, when given, started at ``create_time``)."""
    if pid <= 0:
        return False
    actual = _pid_create_time(pid)
    if actual is None:
        return False
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    return create_time is None or abs(actual - create_time) < 1.0


class SupervisorLock:
    """Exclusive per-namespace lock held for the lifetime of a supervisor.

    Raises :class:`SupervisorRunningError` when another process holds it.
    """

    _fd: int | None = None

    def __init__(self, namespace: str):
        self.namespace = validate_namespace(namespace)
        self.path = namespace_dir(namespace) / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            other = _read_pid(self.path)
            who = f" (pid {other})" if other else ""
            raise SupervisorRunningError(
                f"a dpshm supervisor{who} already runs on namespace {namespace!r}; "
                f"stop it first with `dpshm down` (DPSHM_NAMESPACE={namespace}) or start "
                "this one on another namespace (set DPSHM_NAMESPACE or --namespace)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def close(self) -> None:
        """Release the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> SupervisorLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def write_registry(namespace: str, data: Mapping[str, Any]) -> Path:
    """Write ``registry.json`` of ``namespace`` atomically; return its path."""
    return _write_atomic(namespace_dir(namespace) / REGISTRY_FILE, data)


def write_status(namespace: str, data: Mapping[str, Any]) -> Path:
    """Write ``status.json`` (live figures, refreshed each second) atomically."""
    return _write_atomic(namespace_dir(namespace) / STATUS_FILE, data)


def read_status(namespace: str | None = None) -> dict[str, Any] | None:
    """The last ``status.json`` written, or None."""
    try:
        return json.loads((namespace_dir(namespace, create=False) / STATUS_FILE).read_bytes())
    except (OSError, ValueError):
        return None


def remove_status(namespace: str) -> None:
    """Delete ``status.json`` of ``namespace`` if present."""
    with contextlib.suppress(FileNotFoundError):
        (namespace_dir(namespace, create=False) / STATUS_FILE).unlink()


def _write_atomic(path: Path, data: Mapping[str, Any]) -> Path:
    payload = json.dumps(dict(data), indent=1, sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(prefix=".registry-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def remove_registry(namespace: str) -> None:
    """Delete ``registry.json`` of ``namespace`` if present."""
    with contextlib.suppress(FileNotFoundError):
        (namespace_dir(namespace, create=False) / REGISTRY_FILE).unlink()


def read_registry_raw(namespace: str | None = None) -> dict[str, Any] | None:
    """The registry as written, or None when there is none (or it is unreadable)."""
    try:
        path = namespace_dir(namespace, create=False) / REGISTRY_FILE
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class StreamEntry:
    """One stream as listed in the registry."""

    key: str
    name: str
    type: str
    source_id: str
    ring: str
    generation: int
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def stale(self) -> bool:
        """True while the stream's outlet is gone."""
        return bool(self.info.get("stale", False))


@dataclass(frozen=True)
class Registry:
    """A snapshot of a running supervisor's registry (see module docstring)."""

    namespace: str
    pid: int
    pid_create_time: float | None
    endpoints: Mapping[str, str]
    streams: Mapping[str, StreamEntry]
    raw: Mapping[str, Any]

    def alive(self) -> bool:
        """True while the supervisor process that wrote this snapshot runs."""
        return process_alive(self.pid, self.pid_create_time)

    def find(
        self, name: str | None = None, source_id: str | None = None, type: str | None = None
    ) -> StreamEntry:
        """The one stream matching ``name``, ``source_id`` and ``type`` (see :func:`find_stream`).

        Raises
        ------
        StreamNotFoundError
            Nothing matches; the message lists the known streams.
        AmbiguousStreamError
            Several streams match; the message lists them with their source_ids.
        """
        where = f"the supervisor of namespace {self.namespace!r}"
        return find_stream(self.streams.values(), name, type=type, source_id=source_id, where=where)


def describe_request(
    name: str | None = None, type: str | None = None, source_id: str | None = None
) -> str:
    """``"'eeg'"``, ``"of type 'EEG'"``, ``"'eeg' with source_id 'amp-1'"``: a request in words."""
    parts = [repr(name)] if name is not None else []
    if type is not None:
        parts.append(f"of type {type!r}")
    if source_id is not None:
        parts.append(f"with source_id {source_id!r}")
    return " ".join(parts) or "(any)"


def describe_entry(e: StreamEntry) -> str:
    """One stream in an error message or listing: name, type, source_id and key."""
    return f"{e.name} (type {e.type!r}, source_id {e.source_id!r}, key {e.key!r})"


def select_streams(
    entries: Iterable[StreamEntry],
    name: str | None = None,
    *,
    type: str | None = None,
    source_id: str | None = None,
) -> list[StreamEntry]:
    """Every stream matching a request: the single rule of stream lookup.

    ``type`` and ``source_id``, when given, must match exactly. ``name``
    matches the LSL name; when no stream has that name and neither ``type``
    nor ``source_id`` is given, ``name`` may also be a registry key, a ring
    name or a source_id (what ``dpshm ls`` shows).
    """
    entries = [
        e
        for e in entries
        if (type is None or e.type == type) and (source_id is None or e.source_id == source_id)
    ]
    if name is None:
        return entries
    hits = [e for e in entries if e.name == name]
    if not hits and type is None and source_id is None:
        hits = [e for e in entries if name in (e.key, e.ring, e.source_id)]
    return hits


def find_stream(
    entries: Iterable[StreamEntry],
    name: str | None = None,
    *,
    type: str | None = None,
    source_id: str | None = None,
    where: str = "the supervisor",
) -> StreamEntry:
    """The one stream matching a request (rules of :func:`select_streams`).

    Used by every lookup: :class:`~dpshm.shm.view.SharedStreamView`, ``dpshm
    tail``, the supervisor's ``START_WORKER``.

    Parameters
    ----------
    entries : iterable of StreamEntry
        The streams to choose from (a registry's, or a supervisor's status).
    name, type, source_id : str, optional
        What must match; at least one.
    where : str
        Names the place searched in error messages (``"the supervisor of
        namespace 'default'"``).

    Raises
    ------
    ValueError
        Neither ``name``, ``type`` nor ``source_id`` given.
    StreamNotFoundError
        Nothing matches; the message lists the known streams and the fix.
    AmbiguousStreamError
        Several streams match; the message lists them and the fix.
    """
    if name is None and type is None and source_id is None:
        raise ValueError("name a stream: give its name, type or source_id (or several)")
    entries = list(entries)
    hits = select_streams(entries, name, type=type, source_id=source_id)
    if len(hits) == 1:
        return hits[0]
    what = describe_request(name, type, source_id)
    if not hits:
        known = sorted(describe_entry(e) for e in entries)
        raise StreamNotFoundError(
            f"no stream {what} in {where}; known streams: {known or 'none'}. Check the "
            "name/type/source_id, or start its outlet (the supervisor picks it up within a "
            "couple of seconds)."
        )
    cands = sorted(describe_entry(e) for e in hits)
    raise AmbiguousStreamError(
        f"{len(hits)} streams match {what} in {where}: {cands}. Pass source_id=... (or "
        "type=...) to choose one."
    )


def read_registry(namespace: str | None = None) -> Registry:
    """Read the registry of a *running* supervisor.

    Raises
    ------
    SupervisorNotRunningError
        No registry exists, or the supervisor that wrote it is dead.
    """
    ns = namespace_from_env() if namespace is None else validate_namespace(namespace)
    raw = read_registry_raw(ns)
    hint = (
        f"Start one with `dpshm up` (with DPSHM_NAMESPACE={ns})"
        if ns != "default"
        else "Start one with `dpshm up`"
    )
    if raw is None or raw.get("version") != REGISTRY_VERSION:
        raise SupervisorNotRunningError(
            f"no dpshm supervisor runs on namespace {ns!r} (no registry in "
            f"{namespace_dir(ns, create=False)}). {hint}, or set DPSHM_NAMESPACE to the "
            "namespace it runs on."
        )
    reg = _from_raw(ns, raw)
    if not reg.alive():
        raise SupervisorNotRunningError(
            f"the dpshm supervisor of namespace {ns!r} (pid {reg.pid}) is not running "
            f"any more. {hint} (it removes what the dead one left; so does `dpshm down`)."
        )
    return reg


def entry_from_dict(key: str, s: Mapping[str, Any]) -> StreamEntry:
    """A :class:`StreamEntry` from one stream's registry (or status) dict."""
    return StreamEntry(
        key=key,
        name=str(s.get("name", "")),
        type=str(s.get("type", "")),
        source_id=str(s.get("source_id", "")),
        ring=str(s.get("ring", "")),
        generation=int(s.get("generation", 0)),
        info=dict(s),
    )


def _from_raw(ns: str, raw: Mapping[str, Any]) -> Registry:
    streams = {key: entry_from_dict(key, s) for key, s in dict(raw.get("streams", {})).items()}
    return Registry(
        namespace=ns,
        pid=int(raw.get("pid", 0)),
        pid_create_time=raw.get("pid_create_time"),
        endpoints=dict(raw.get("endpoints", {})),
        streams=streams,
        raw=raw,
    )


def list_streams(namespace: str | None = None) -> dict[str, Any]:
    """What the supervisor of ``namespace`` shares now (what ``dpshm ls --json`` prints).

    Parameters
    ----------
    namespace : str, optional
        Default ``$DPSHM_NAMESPACE`` or ``"default"``.

    Returns
    -------
    dict
        ``{"namespace": str, "pid": int, "streams": {key: stream}}`` where each
        ``stream`` holds its registry fields (``name``, ``type``, ``source_id``,
        ``hostname``, ``ring``, ``generation``, ``channels``, ``format``,
        ``srate``, ``capacity``, ``time_offset``, ``stale``; see the module
        docstring), the live figures of ``status.json`` (``measured_rate``,
        ``lag_s``, ``lost``: samples the supervisor's inlet missed, estimated
        from timestamp gaps; ``state``: ``ok``, ``STALE`` or ``ERROR``, and
        ``reason``, a short why) and ``head``/``stale`` read from the ring itself.
        The ``key`` identifies a stream (pass it as ``name`` to a view to
        follow exactly that stream).

    Raises
    ------
    SupervisorNotRunningError
        No supervisor runs on ``namespace`` (the message says how to start one).

    Examples
    --------
    >>> for key, s in dpshm.list_streams()["streams"].items():   # doctest: +SKIP
    ...     print(s["name"], s["type"], s["channels"], s["srate"], s["head"])
    """
    from dpshm.shm.ring import SharedRing

    ns = namespace_from_env() if namespace is None else validate_namespace(namespace)
    reg = read_registry(ns)
    live = (read_status(ns) or {}).get("streams", {})
    streams = {}
    for key, e in reg.streams.items():
        s = {**dict(e.info), **live.get(key, {})}
        try:
            with SharedRing.attach(e.ring) as ring:
                s["head"] = ring.head
                s["stale"] = ring.stale
        except LookupError:  # the ring went away meanwhile (a new generation)
            pass
        streams[key] = s
    return {"namespace": ns, "pid": reg.pid, "streams": streams}
