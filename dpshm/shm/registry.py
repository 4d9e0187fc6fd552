"""Where a supervisor announces itself: runtime directory, lock and registry file.

Layout (one directory per namespace, mode 0700)::

    $XDG_RUNTIME_DIR/dpshm/<namespace>/     (or /tmp/dpshm-<uid>/<namespace>/)
        supervisor.lock   flock held by the running supervisor; holds its pid
        registry.json     written atomically (temp file + rename) on structural changes
        status.json       live figures (head, rates, lag, lost), rewritten each second
        heads.ipc         ZeroMQ PUB endpoint of head updates (transport ipc)
        logs.ipc          ZeroMQ PUB endpoint of JSON log records

Every directory and file here is checked by :mod:`dpshm.shm.rundir` (ours, not
a symlink, not writable by others; files opened with ``O_NOFOLLOW``).

The lock is an ``flock`` on ``supervisor.lock``: the kernel drops it when the
holder dies, even by SIGKILL, so a crashed supervisor never blocks the next one.
Releasing it removes the file, then the namespace directory if it is empty.

``registry.json`` (version 1), written and read only through :class:`Registry`
and :class:`StreamEntry` (``to_json``/``from_json``)::

    {
      "version": 1,
      "namespace": "default",
      "pid": 1234, "pid_started": 1234.56,   # supervisor process, started s after boot
      "started": 1700000000.5,                         # time.time()
      "endpoints": {"heads": "ipc://...", "logs": "ipc://...",
                    "doorbell": "dpshm-1000-default-4242-1a2b3c",  # Linux: abstract
                                                     # address, see dpshm.shm.doorbell
                    "requests": "/run/user/1000/dpshm/default/requests.sock"},
                                                     # publishers register here
      "streams": {
        "<key>": {                                   # key: unique per source
          "name": "eeg", "type": "EEG", "source_id": "amp-1", "hostname": "...",
          "ring": "default.eeg.ab12cd.k3x9q1.g1",    # shared-memory segment dpshm_<ring>
          "generation": 1, "channels": 64, "format": "float32",
          "srate": 1000.0, "capacity": 10000,
          "time_offset": 0.0001,                     # inlet.time_correction()
          "stale": false,
          "producer_pid": null,                      # derived streams: the publishing
                                                     # process (null: fed from LSL)
          "endpoints": {}                            # derived streams: the producer's own
                                                     # "doorbell" and "heads" (wake-ups
                                                     # come from it, not the supervisor)
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

from dpshm._logging import library_logger
from dpshm.config import namespace_from_env, validate_namespace
from dpshm.dareplane.procs import pid_alive, start_time
from dpshm.errors import (
    AmbiguousStreamError,
    StreamNotFoundError,
    SupervisorNotRunningError,
    SupervisorRunningError,
    UnsafeOwnershipError,
)
from dpshm.shm.rundir import (  # noqa: F401  (runtime_dir, namespace_dir: used via registry)
    ENV_RUNTIME_DIR,
    namespace_dir,
    open_private,
    read_private,
    runtime_dir,
)

log = library_logger(__name__)

REGISTRY_VERSION = 1
LOCK_FILE = "supervisor.lock"
REGISTRY_FILE = "registry.json"
STATUS_FILE = "status.json"


class SupervisorLock:
    """Exclusive per-namespace lock held for the lifetime of a supervisor.

    Raises :class:`SupervisorRunningError` when another process holds it.
    """

    _fd: int | None = None

    def __init__(self, namespace: str):
        self.namespace = validate_namespace(namespace)
        for _attempt in range(_LOCK_ATTEMPTS):
            try:
                self.path = namespace_dir(namespace) / LOCK_FILE
                fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
            except FileNotFoundError:  # a stopping holder removed the empty directory
                continue
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
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as we opened it (close()): lock the new one
        else:  # pragma: no cover - needs a supervisor starting and stopping in a loop
            raise SupervisorRunningError(
                f"the lock file of namespace {namespace!r} kept changing; retry"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def close(self) -> None:
        """Release the lock, remove its file and the namespace directory if empty (idempotent).

        The file is unlinked while the lock is still held: a supervisor starting
        meanwhile creates and locks a new file, never one that is being removed.
        The directory goes only when nothing else is in it (``rmdir``); a
        supervisor that created its lock file there first keeps it, and one that
        finds the directory gone creates it again (see ``__init__``).
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            with contextlib.suppress(OSError):  # ENOTEMPTY: another file lives there
                os.rmdir(self.path.parent)
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> SupervisorLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LOCK_ATTEMPTS = 5


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not unlinked or replaced)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _read_pid(path: Path) -> int | None:
    try:
        text = read_private(path).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def write_registry(reg: Registry) -> Path:
    """Write ``registry.json`` of ``reg.namespace`` atomically; return its path."""
    return _write_atomic(namespace_dir(reg.namespace) / REGISTRY_FILE, reg.to_json())


def write_status(namespace: str, data: Mapping[str, Any]) -> Path:
    """Write ``status.json`` (live figures, refreshed each second) atomically."""
    return _write_atomic(namespace_dir(namespace) / STATUS_FILE, data)


def read_status(namespace: str | None = None) -> dict[str, Any] | None:
    """The last ``status.json`` written, or None."""
    try:
        return json.loads(read_private(namespace_dir(namespace, create=False) / STATUS_FILE))
    except UnsafeOwnershipError:
        raise
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


def registry_path(namespace: str | None = None) -> Path:
    """Where ``namespace``'s ``registry.json`` is (the directory is not created)."""
    return namespace_dir(namespace, create=False) / REGISTRY_FILE


def file_stamp(path: Path) -> tuple[int, int] | None:
    """``(inode, mtime_ns)`` of ``path``, None when it is missing: one ``stat()``.

    The registry is replaced atomically on every write, so a changed stamp means
    a new registry; readers compare stamps instead of reading the file.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def registry_stamp(namespace: str | None = None) -> tuple[int, int] | None:
    """:func:`file_stamp` of ``namespace``'s registry."""
    return file_stamp(registry_path(namespace))


def remove_registry(namespace: str) -> None:
    """Delete ``registry.json`` of ``namespace`` if present."""
    with contextlib.suppress(FileNotFoundError):
        registry_path(namespace).unlink()


def read_registry_raw(namespace: str | None = None) -> dict[str, Any] | None:
    """The registry as written, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(read_private(registry_path(namespace)))
    except UnsafeOwnershipError:
        raise
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class StreamEntry:
    """One stream as listed in the registry (one ``streams`` item of ``registry.json``).

    Attributes
    ----------
    key : str
        Registry key, unique per source (see :func:`dpshm.shm.feed.stream_key`).
    name, type, source_id, hostname : str
        The stream's identity (as its LSL outlet or its publisher gave it).
    ring : str
        Name of the shared-memory ring holding the samples (segment ``dpshm_<ring>``).
    generation : int
        Bumped when the stream comes back with another format (new ring).
    channels, format, srate, capacity
        The ring's format: channel count, LSL channel format, nominal rate
        (0.0 irregular), samples kept.
    time_offset : float
        The source's LSL ``time_correction`` (0.0 for streams published on this host).
    stale : bool
        True while the stream's source (outlet or publishing process) is gone.
    producer_pid : int or None
        For a stream published by a process (:func:`dpshm.publish_stream`): its pid;
        None for a stream the supervisor reads from LSL.
    endpoints : Mapping[str, str]
        For a published stream: the producer's own wake-up endpoints (``"doorbell"``,
        ``"heads"``); consumers subscribe there instead of at the supervisor.
    """

    key: str
    name: str
    type: str = ""
    source_id: str = ""
    ring: str = ""
    generation: int = 0
    hostname: str = ""
    channels: int = 0
    format: str = ""
    srate: float = 0.0
    capacity: int = 0
    time_offset: float = 0.0
    stale: bool = False
    producer_pid: int | None = None
    endpoints: Mapping[str, str] = field(default_factory=dict)

    @property
    def derived(self) -> bool:
        """True for a stream published by a process rather than read from LSL."""
        return self.producer_pid is not None

    @property
    def info(self) -> dict[str, Any]:
        """The entry as written (:meth:`to_json`)."""
        return self.to_json()

    def to_json(self) -> dict[str, Any]:
        """The JSON object written under ``streams[key]`` (the key itself is not in it)."""
        return {
            "name": self.name,
            "type": self.type,
            "source_id": self.source_id,
            "hostname": self.hostname,
            "ring": self.ring,
            "generation": int(self.generation),
            "channels": int(self.channels),
            "format": self.format,
            "srate": float(self.srate),
            "capacity": int(self.capacity),
            "time_offset": float(self.time_offset),
            "stale": bool(self.stale),
            "producer_pid": self.producer_pid,
            "endpoints": dict(self.endpoints),
        }

    @classmethod
    def from_json(cls, key: str, d: Mapping[str, Any]) -> StreamEntry:
        """Read one ``streams`` item; missing fields take their defaults."""
        pid = d.get("producer_pid")
        return cls(
            key=key,
            name=str(d.get("name", "")),
            type=str(d.get("type", "")),
            source_id=str(d.get("source_id", "")),
            ring=str(d.get("ring", "")),
            generation=int(d.get("generation", 0)),
            hostname=str(d.get("hostname", "")),
            channels=int(d.get("channels", 0)),
            format=str(d.get("format", "")),
            srate=float(d.get("srate", 0.0)),
            capacity=int(d.get("capacity", 0)),
            time_offset=float(d.get("time_offset", 0.0)),
            stale=bool(d.get("stale", False)),
            producer_pid=None if pid is None else int(pid),
            endpoints={str(k): str(v) for k, v in dict(d.get("endpoints") or {}).items()},
        )


@dataclass(frozen=True)
class Registry:
    """A supervisor's registry: what ``registry.json`` holds (see the module docstring)."""

    namespace: str
    pid: int
    pid_started: float | None = None
    endpoints: Mapping[str, str] = field(default_factory=dict)
    streams: Mapping[str, StreamEntry] = field(default_factory=dict)
    started: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The whole ``registry.json`` object."""
        return {
            "version": REGISTRY_VERSION,
            "namespace": self.namespace,
            "pid": self.pid,
            "pid_started": self.pid_started,
            "started": self.started,
            "endpoints": dict(self.endpoints),
            "streams": {k: e.to_json() for k, e in self.streams.items()},
        }

    @classmethod
    def from_json(cls, namespace: str, raw: Mapping[str, Any]) -> Registry:
        """Read ``registry.json`` as loaded by :func:`json.loads`."""
        ct = raw.get("pid_started")
        return cls(
            namespace=namespace,
            pid=int(raw.get("pid", 0)),
            pid_started=None if ct is None else float(ct),
            endpoints={str(k): str(v) for k, v in dict(raw.get("endpoints", {})).items()},
            streams={
                k: StreamEntry.from_json(k, s) for k, s in dict(raw.get("streams", {})).items()
            },
            started=float(raw.get("started", 0.0)),
        )

    @classmethod
    def for_this_process(cls, namespace: str, **fields: Any) -> Registry:
        """A registry written by the calling process (its pid and start time)."""
        me = os.getpid()
        return cls(namespace=namespace, pid=me, pid_started=start_time(me), **fields)

    def alive(self) -> bool:
        """True while the supervisor process that wrote this snapshot runs."""
        return pid_alive(self.pid, self.pid_started)

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
    reg = Registry.from_json(ns, raw)
    if not reg.alive():
        raise SupervisorNotRunningError(
            f"the dpshm supervisor of namespace {ns!r} (pid {reg.pid}) is not running "
            f"any more. {hint} (it removes what the dead one left; so does `dpshm down`)."
        )
    return reg


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
        ``srate``, ``capacity``, ``time_offset``, ``stale``, ``producer_pid``,
        ``endpoints``; see the module docstring), the live figures of
        ``status.json`` (``measured_rate``, ``lag_s``, ``lost``: samples the
        supervisor's inlet missed, estimated from timestamp gaps; ``state``:
        ``ok``, ``STALE`` or ``ERROR``, and ``reason``, a short why) and
        ``head``/``stale`` read from the ring itself.
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
