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
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dpshm.config import namespace_from_env, validate_namespace
from dpshm.errors import StreamNotFoundError, SupervisorNotRunningError, SupervisorRunningError

log = logging.getLogger(__name__)

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

    def find(self, name: str, source_id: str | None = None) -> StreamEntry:
        """Find a stream by LSL name, source_id, registry key or ring name.

        The source_id picks one of several streams of the same name.

        Raises
        ------
        StreamNotFoundError
            Nothing matches; the message lists the known streams.
        AmbiguousStreamError
            Several streams have that name; the message lists their source_ids.
        """
        from dpshm.errors import AmbiguousStreamError

        entries = list(self.streams.values())
        if source_id is not None:
            hits = [e for e in entries if e.source_id == source_id and name in (None, e.name)]
        else:
            hits = [e for e in entries if e.name == name]
            if not hits:
                hits = [e for e in entries if name in (e.key, e.ring, e.source_id)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            known = sorted(f"{e.name} (source_id={e.source_id!r})" for e in entries)
            what = f"{name!r}" + (f" with source_id {source_id!r}" if source_id else "")
            raise StreamNotFoundError(
                f"no stream {what} in the supervisor of namespace {self.namespace!r}; "
                f"known streams: {known or 'none'}. Check the name, or start its outlet "
                "(the supervisor picks it up within a couple of seconds)."
            )
        cands = sorted(f"source_id={e.source_id!r} (type {e.type!r})" for e in hits)
        raise AmbiguousStreamError(
            f"{len(hits)} streams are named {name!r} in namespace {self.namespace!r}: "
            f"{cands}. Pass source_id=... to choose one."
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


def _from_raw(ns: str, raw: Mapping[str, Any]) -> Registry:
    streams = {}
    for key, s in dict(raw.get("streams", {})).items():
        streams[key] = StreamEntry(
            key=key,
            name=str(s.get("name", "")),
            type=str(s.get("type", "")),
            source_id=str(s.get("source_id", "")),
            ring=str(s.get("ring", "")),
            generation=int(s.get("generation", 0)),
            info=dict(s),
        )
    return Registry(
        namespace=ns,
        pid=int(raw.get("pid", 0)),
        pid_create_time=raw.get("pid_create_time"),
        endpoints=dict(raw.get("endpoints", {})),
        streams=streams,
        raw=raw,
    )
