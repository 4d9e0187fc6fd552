"""Configuration of the supervisor (``dpshm up``), its server and its workers.

Configuration is data, read in one place: frozen dataclasses built from, in
increasing priority, the defaults below, a TOML file, environment variables and
command-line flags. Nothing is imported or started here; worker targets are
validated as strings (``"package.module:function"``) but never imported.

TOML layout (every table and key is optional)::

    [supervisor]
    namespace = "default"        # also env DPSHM_NAMESPACE
    buffer_s = 10.0              # ring length of regular streams, seconds
    irregular_samples = 4096     # ring length of irregular/marker streams, samples
    string_width = 256           # bytes per marker slot (UTF-8)
    resolve_interval_s = 1.0     # how often LSL is searched for new outlets
    transport = "ipc"            # "ipc" (runtime dir) or "tcp" (127.0.0.1)
    max_subscribers = 256        # doorbell subscriptions (all streams together)

    [[streams]]                  # selection; no [[streams]] = every stream
    name = "eeg"                 # any of name / type / source_id
    type = "EEG"
    source_id = "amp-1234"
    buffer_s = 5.0               # per-stream override
    irregular_samples = 1024

    [server]                     # the supervisor's command server; without this
    host = "127.0.0.1"           # table (and without --port) no TCP port is opened
    port = 7090
    token = ""

    [workers.bandpower]          # workers startable over TCP
    target = "mypkg.decoders:bandpower"
    mode = "thread"              # or "process"
    kwargs = { band = [8, 12] }  # defaults the target receives
    restart = "off"              # or "on-failure"
    max_restarts = 3
    backoff_s = 1.0

    [workers.bandpower.params]   # what a client may set in START_WORKER's kwargs
    period_s = { type = "float", min = 0.02, max = 10.0 }

Every size and interval is bounded (:data:`BOUNDS`); the same function,
:func:`check_value`, checks a value from the file and from a flag. Errors raise
:class:`~dpshm.errors.ConfigError` naming the file, the line, the key (or the
flag), the bad value and the allowed range.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dpshm.bounds import BOUNDS, MAX_INLET_BUFLEN_S, Bound, check_value  # noqa: F401
from dpshm.errors import ConfigError
from dpshm.params import ParamSpec, check_param, parse_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# Environment variables
ENV_NAMESPACE = "DPSHM_NAMESPACE"
ENV_CONFIG = "DPSHM_CONFIG"
ENV_ALLOW_UNSAFE_PLATFORM = "DPSHM_ALLOW_UNSAFE_PLATFORM"  # "1": rings on a non-x86-64 CPU

# Defaults (shown in --help)
DEFAULT_NAMESPACE = "default"
DEFAULT_BUFFER_S = 10.0
DEFAULT_IRREGULAR_SAMPLES = 4096
DEFAULT_STRING_WIDTH = 256
DEFAULT_RESOLVE_INTERVAL_S = 1.0
DEFAULT_TRANSPORT = "ipc"
DEFAULT_SERVER_HOST = "127.0.0.1"
DEFAULT_SERVER_PORT = 7090  # no Dareplane module defaults to it (they use 8080+)
DEFAULT_MAX_SUBSCRIBERS = 256
DEFAULT_VIEW_HOST = "127.0.0.1"  # `dpshm view` (browser viewer)
DEFAULT_VIEW_PORT = 7091  # no Dareplane default uses it (modules 8080+, 8050, 9020)
DEFAULT_RESTART = "off"
DEFAULT_MAX_RESTARTS = 3
DEFAULT_BACKOFF_S = 1.0

TRANSPORTS = ("ipc", "tcp")
WORKER_MODES = ("thread", "process")
RESTART_POLICIES = ("off", "on-failure")


_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_TARGET_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class StreamSelector:
    """Selects LSL streams by name, type and/or source_id (all given must match).

    ``buffer_s`` / ``irregular_samples`` override the supervisor's defaults for
    the streams this selector matches.
    """

    name: str | None = None
    type: str | None = None
    source_id: str | None = None
    buffer_s: float | None = None
    irregular_samples: int | None = None

    def matches(self, name: str, type_: str, source_id: str) -> bool:
        """Return True when every criterion given matches the stream."""
        return (
            (self.name is None or self.name == name)
            and (self.type is None or self.type == type_)
            and (self.source_id is None or self.source_id == source_id)
        )

    def describe(self) -> str:
        """Human-readable form, e.g. ``name='eeg' type='EEG'``."""
        parts = [f"{k}={v!r}" for k, v in self._criteria().items()]
        return " ".join(parts) or "<any>"

    def _criteria(self) -> dict[str, str]:
        crit = {"name": self.name, "type": self.type, "source_id": self.source_id}
        return {k: v for k, v in crit.items() if v is not None}


@dataclass(frozen=True)
class ServerConfig:
    """The supervisor's Dareplane-compatible TCP server (``[server]``).

    ``enabled`` is False unless the configuration has a ``[server]`` table or
    ``--port`` was given: by default ``dpshm up`` opens no TCP port.
    """

    enabled: bool = False
    host: str = DEFAULT_SERVER_HOST
    port: int = DEFAULT_SERVER_PORT
    token: str = ""


@dataclass(frozen=True)
class RestartPolicy:
    """What to do when a worker fails: ``off`` or ``on-failure`` with backoff."""

    policy: str = DEFAULT_RESTART
    max_restarts: int = DEFAULT_MAX_RESTARTS
    backoff_s: float = DEFAULT_BACKOFF_S


@dataclass(frozen=True)
class WorkerConfig:
    """A worker declared as ``[workers.NAME]``; the target is never imported here."""

    name: str
    target: str
    mode: str = "thread"
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    #: what a client may set in START_WORKER's kwargs (nothing when empty)
    params: Mapping[str, ParamSpec] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def module(self) -> str:
        """The module part of ``target``."""
        return self.target.split(":", 1)[0]

    @property
    def function(self) -> str:
        """The attribute path after the colon of ``target``."""
        return self.target.split(":", 1)[1]


@dataclass(frozen=True)
class SupervisorConfig:
    """Everything ``dpshm up`` needs; build with :func:`load_config`."""

    namespace: str = DEFAULT_NAMESPACE
    buffer_s: float = DEFAULT_BUFFER_S
    irregular_samples: int = DEFAULT_IRREGULAR_SAMPLES
    string_width: int = DEFAULT_STRING_WIDTH
    resolve_interval_s: float = DEFAULT_RESOLVE_INTERVAL_S
    transport: str = DEFAULT_TRANSPORT
    max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS
    streams: tuple[StreamSelector, ...] = ()
    server: ServerConfig = field(default_factory=ServerConfig)
    workers: Mapping[str, WorkerConfig] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "<defaults>"

    def selects(self, name: str, type_: str, source_id: str) -> StreamSelector | None:
        """Return the selector matching a stream, or None when it is not selected.

        A catch-all selector when none are configured.
        """
        if not self.streams:
            return StreamSelector()
        for sel in self.streams:
            if sel.matches(name, type_, source_id):
                return sel
        return None

    def buffer_for(self, selector: StreamSelector, srate: float) -> int:
        """Ring capacity in samples for a stream of nominal rate ``srate``."""
        if srate > 0:
            seconds = selector.buffer_s if selector.buffer_s is not None else self.buffer_s
            return max(math.ceil(seconds * srate), 16)
        n = selector.irregular_samples
        return int(n if n is not None else self.irregular_samples)


# ---------------------------------------------------------------------------
# validation helpers


class _Ctx:
    """Where a value came from, to name it in errors (file, line, key)."""

    def __init__(self, source: str, text: str | None = None):
        self.source = source
        self.lines = text.splitlines() if text is not None else None

    def where(self, table: Sequence[str], key: str | None, index: int | None = None) -> str:
        dotted = ".".join(table)
        if index is not None:
            dotted = f"{dotted}[{index}]"
        full = f"{dotted}.{key}" if key else dotted
        line = self._line(table, key, index)
        loc = f"{self.source}, line {line}" if line else self.source
        return f"{loc}: '{full}'"

    def _line(self, table: Sequence[str], key: str | None, index: int | None) -> int | None:
        """Best-effort line number of ``key`` inside ``[table]``/``[[table]]``."""
        if self.lines is None:
            return None
        header = ".".join(table)
        hdr = re.compile(r"^\s*\[\[?\s*" + re.escape(header) + r"\s*\]\]?\s*(#.*)?$")
        any_hdr = re.compile(r"^\s*\[")
        seen = -1
        start = None
        for i, raw in enumerate(self.lines):
            if hdr.match(raw):
                seen += 1
                if index is None or seen == index:
                    start = i
                    break
        if start is None:
            return None
        if key is None:
            return start + 1
        key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for j in range(start + 1, len(self.lines)):
            if any_hdr.match(self.lines[j]):
                break
            if key_re.match(self.lines[j]):
                return j + 1
        return start + 1


def _check_keys(ctx: _Ctx, table: Sequence[str], data: Mapping[str, Any], allowed, index=None):
    for key in data:
        if key not in allowed:
            raise ConfigError(
                f"{ctx.where(table, key, index)}: unknown key; "
                f"allowed keys are {sorted(allowed)}. Fix the spelling or remove it."
            )


def _get(ctx, table, data, key, kind, index=None, choices=None, default=None):
    """Fetch ``data[key]`` checking its type (and choices)."""
    if key not in data:
        return default
    value = data[key]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    names = {str: "a string", int: "an integer", float: "a number", dict: "a table"}
    if not ok:
        raise ConfigError(
            f"{ctx.where(table, key, index)} must be {names.get(kind, kind.__name__)}, "
            f"got {value!r} ({type(value).__name__})."
        )
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{ctx.where(table, key, index)} must be one of {list(choices)}, got {value!r}."
        )
    return value


def validate_namespace(namespace: str, where: str = "namespace") -> str:
    """Return ``namespace`` or raise ConfigError explaining the allowed form."""
    if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace):
        raise ConfigError(
            f"{where} {namespace!r} is not a valid namespace: use 1-40 characters "
            "from A-Z, a-z, 0-9, '_' and '-'."
        )
    return namespace


_SUP_KEYS = {
    "namespace",
    "buffer_s",
    "irregular_samples",
    "string_width",
    "resolve_interval_s",
    "transport",
    "max_subscribers",
}
_STREAM_KEYS = {"name", "type", "source_id", "buffer_s", "irregular_samples"}
_SERVER_KEYS = {"host", "port", "token"}
_WORKER_KEYS = {"target", "mode", "kwargs", "restart", "max_restarts", "backoff_s", "params"}


def _parse_supervisor(ctx: _Ctx, data: Mapping[str, Any]) -> dict[str, Any]:
    t = ("supervisor",)
    _check_keys(ctx, t, data, _SUP_KEYS)
    out: dict[str, Any] = {}
    if "namespace" in data:
        ns = _get(ctx, t, data, "namespace", str)
        out["namespace"] = validate_namespace(ns, ctx.where(t, "namespace"))
    for key in ("buffer_s", "resolve_interval_s", "irregular_samples", "string_width"):
        if key in data:
            out[key] = check_value(key, data[key], ctx.where(t, key))
    if "max_subscribers" in data:
        out["max_subscribers"] = check_value(
            "max_subscribers", data["max_subscribers"], ctx.where(t, "max_subscribers")
        )
    if "transport" in data:
        out["transport"] = _get(ctx, t, data, "transport", str, choices=TRANSPORTS)
    return out


def _parse_stream(ctx: _Ctx, data: Any, index: int) -> StreamSelector:
    t = ("streams",)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{ctx.where(t, None, index)} must be a table, got {data!r}.")
    _check_keys(ctx, t, data, _STREAM_KEYS, index)
    kw = {k: _get(ctx, t, data, k, str, index) for k in ("name", "type", "source_id")}
    if all(v is None for v in kw.values()):
        raise ConfigError(
            f"{ctx.where(t, None, index)} selects nothing: give at least one of "
            "'name', 'type' or 'source_id'."
        )
    sizes = {
        k: check_value(k, data[k], ctx.where(t, k, index))
        for k in ("buffer_s", "irregular_samples")
        if k in data
    }
    return StreamSelector(**kw, **sizes)


def _parse_server(ctx: _Ctx, data: Mapping[str, Any]) -> ServerConfig:
    t = ("server",)
    _check_keys(ctx, t, data, _SERVER_KEYS)
    port = DEFAULT_SERVER_PORT
    if "port" in data:
        port = check_value("port", data["port"], ctx.where(t, "port"))
    return ServerConfig(
        enabled=True,
        host=_get(ctx, t, data, "host", str, default=DEFAULT_SERVER_HOST),
        port=port,
        token=_get(ctx, t, data, "token", str, default=""),
    )


def _parse_worker(ctx: _Ctx, name: str, data: Any) -> WorkerConfig:
    t = ("workers", name)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{ctx.where(t, None)} must be a table, got {data!r}.")
    _check_keys(ctx, t, data, _WORKER_KEYS)
    target = _get(ctx, t, data, "target", str)
    if target is None:
        raise ConfigError(
            f"{ctx.where(t, None)} has no 'target': add target = \"package.module:function\"."
        )
    if not _TARGET_RE.match(target):
        raise ConfigError(
            f"{ctx.where(t, 'target')} must look like 'package.module:function', got {target!r}."
        )
    kwargs = _get(ctx, t, data, "kwargs", dict, default={})
    params = {
        key: parse_spec(key, spec, ctx.where((*t, "params"), key))
        for key, spec in _get(ctx, t, data, "params", dict, default={}).items()
    }
    for key, spec in params.items():  # declared defaults obey their own declaration
        if key in kwargs:  # named as the kwargs line, with the key: 'workers.bp.kwargs.key'
            check_param(spec, kwargs[key], ctx.where(t, "kwargs")[:-1] + f".{key}'")
    bounded = {
        k: check_value(k, data[k], ctx.where(t, k))
        for k in ("max_restarts", "backoff_s")
        if k in data
    }
    restart = RestartPolicy(
        policy=_get(
            ctx, t, data, "restart", str, choices=RESTART_POLICIES, default=DEFAULT_RESTART
        ),
        **bounded,
    )
    return WorkerConfig(
        name=name,
        target=target,
        mode=_get(ctx, t, data, "mode", str, choices=WORKER_MODES, default="thread"),
        kwargs=MappingProxyType(dict(kwargs)),
        restart=restart,
        params=MappingProxyType(params),
    )


def parse_toml(text: str, source: str = "<string>") -> SupervisorConfig:
    """Parse a TOML document into a :class:`SupervisorConfig`.

    Raises
    ------
    ConfigError
        On a TOML syntax error (with its line and column) or an unknown key,
        a wrong type or an out-of-range value (with the key and its line).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}. Fix the syntax there.") from None
    ctx = _Ctx(source, text)
    top = {"supervisor", "streams", "server", "workers"}
    for key in data:
        if key not in top:
            line = ctx._line((key,), None, None)
            loc = f"{source}, line {line}" if line else source
            raise ConfigError(f"{loc}: unknown table or key {key!r}; allowed are {sorted(top)}.")
    kw: dict[str, Any] = {"source": source}
    sup = data.get("supervisor", {})
    if not isinstance(sup, Mapping):
        raise ConfigError(f"{source}: 'supervisor' must be a table, got {sup!r}.")
    kw.update(_parse_supervisor(ctx, sup))
    streams = data.get("streams", [])
    if not isinstance(streams, list):
        raise ConfigError(
            f"{ctx.where(('streams',), None)}: write streams as [[streams]] tables, "
            f"got {streams!r}."
        )
    kw["streams"] = tuple(_parse_stream(ctx, s, i) for i, s in enumerate(streams))
    if "server" in data:  # the table turns the command server on
        server = data["server"]
        if not isinstance(server, Mapping):
            raise ConfigError(f"{source}: 'server' must be a table, got {server!r}.")
        kw["server"] = _parse_server(ctx, server)
    workers = data.get("workers", {})
    if not isinstance(workers, Mapping):
        raise ConfigError(f"{source}: 'workers' must be a table of [workers.NAME] tables.")
    kw["workers"] = MappingProxyType({n: _parse_worker(ctx, n, w) for n, w in workers.items()})
    return SupervisorConfig(**kw)


def parse_selector(text: str) -> StreamSelector:
    """Parse a command-line stream selection.

    ``eeg``, ``name=eeg``, ``type=EEG`` or ``source_id=amp-1`` (several
    ``key=value`` joined by ``,``).
    """
    if "=" not in text:
        if not text:
            raise ConfigError("--stream needs a name, e.g. --stream eeg or --stream type=EEG.")
        return StreamSelector(name=text)
    kw: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("name", "type", "source_id") or not value:
            raise ConfigError(
                f"--stream {text!r}: cannot read {part!r}; use NAME or key=value with key "
                "name, type or source_id (e.g. --stream type=EEG,name=amp)."
            )
        kw[key] = value
    return StreamSelector(**kw)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SupervisorConfig:
    """Build the configuration: defaults < TOML file < environment < overrides.

    Parameters
    ----------
    path : path-like, optional
        TOML file; when None, ``$DPSHM_CONFIG`` is used if set.
    env : mapping, optional
        Environment to read (default ``os.environ``): ``DPSHM_NAMESPACE``,
        ``DPSHM_CONFIG``.
    overrides : mapping, optional
        Values from command-line flags (``None`` values are ignored). The key
        ``streams`` takes a sequence of :class:`StreamSelector` and replaces the
        file's selection; ``server_port`` overrides ``[server] port`` and
        turns the server on. Bounded values go through :func:`check_value`,
        exactly as the file's do.
    """
    env = os.environ if env is None else env
    if path is None and env.get(ENV_CONFIG):
        path = env[ENV_CONFIG]
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"config file {str(p)!r} does not exist; check the path given with "
                f"--config or ${ENV_CONFIG}."
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(p)!r} cannot be read: {exc}.") from None
        cfg = parse_toml(text, source=str(p))
    else:
        cfg = SupervisorConfig()
    changes: dict[str, Any] = {}
    if env.get(ENV_NAMESPACE):
        changes["namespace"] = validate_namespace(env[ENV_NAMESPACE], f"${ENV_NAMESPACE}")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "server_port":
            port = check_value("port", value)
            changes["server"] = replace(cfg.server, enabled=True, port=port)
        elif key == "streams":
            if value:
                changes["streams"] = tuple(value)
        elif key == "namespace":
            changes["namespace"] = validate_namespace(value, "--namespace")
        elif key in BOUNDS:
            changes[key] = check_value(key, value)
        elif key in _SUP_KEYS:
            changes[key] = value
        else:
            raise ConfigError(f"unknown configuration override {key!r}.")
    return replace(cfg, **changes) if changes else cfg


WORKER_SOURCE_PREFIX = "dpshm-worker-"


def worker_source_id(namespace: str, worker: str) -> str:
    """The LSL source_id every instance of declared worker ``worker`` publishes under."""
    return f"{WORKER_SOURCE_PREFIX}{namespace}-{worker}"


def namespace_from_env(env: Mapping[str, str] | None = None) -> str:
    """The namespace consumers use: ``$DPSHM_NAMESPACE`` or ``'default'``."""
    env = os.environ if env is None else env
    ns = env.get(ENV_NAMESPACE) or DEFAULT_NAMESPACE
    return validate_namespace(ns, f"${ENV_NAMESPACE}")
