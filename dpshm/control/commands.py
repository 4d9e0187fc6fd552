"""The supervisor's TCP commands, as a ``pcommand_map`` for the ``DefaultServer``.

(:class:`~dpshm.dareplane.server.DefaultServer`.)

Commands (replies are one line; JSON unless noted; a refused command replies
one line starting with ``ERROR`` that names the problem, and the server keeps
serving)::

    LIST_STREAMS                         [{"name", "type", "channels", "rate", "head",
                                           "stale"}, ...]
    STATUS                               {"supervisor": {...}, "streams": [...], "workers": [...]}
    START_WORKER|{"worker": NAME, "streams": [...], "kwargs": {...}}
                                         the worker id, e.g. bandpower-1 (plain text)
    STOP_WORKER|{"id": ID}               the worker's final status (JSON object)
    LIST_WORKERS                         {"declared": {NAME: {"mode", "target", "kwargs",
                                          "params", "restart"}}, "workers": [status, ...]}

The server's built-ins keep their meaning: ``STOP`` stops every worker (and
whatever else the server started), ``CLOSE`` shuts the supervisor down,
``GET_PCOMMS`` lists the commands, ``UP`` replies ``1``.

Only workers declared in the configuration can be started: ``worker`` is a
declared *name*; a target string or any key other than ``worker``,
``streams`` and ``kwargs`` is refused. Nothing a client sends is ever
imported. A client may set only the kwargs the worker declares in
``[workers.NAME.params]``, within their types and bounds (:mod:`dpshm.params`);
a kwarg naming a stream the worker will publish may not take a name another
stream holds.

The frontend talks to the supervisor through a small interface, so it can be
tested (and reused) without it:

``manager``
    a :class:`~dpshm.control.workers.WorkerManager`.
``streams_status()``
    returns a list of dicts, one per stream, with at least ``name``, ``type``,
    ``channels`` (or ``n_channels``), ``rate`` (or ``srate``), ``head`` and
    ``stale``; more keys are passed through in ``STATUS``.
``supervisor_status()``
    returns a JSON-able dict about the supervisor itself (pid, namespace, ...).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dpshm._logging import library_logger
from dpshm.config import DEFAULT_SERVER_PORT
from dpshm.control.context import WORKER_LOGGER_PREFIX, attach_view
from dpshm.control.workers import WorkerManager
from dpshm.dareplane.logs import DEFAULT_LOG_PORT, JsonSocketHandler
from dpshm.dareplane.protocol import error_line
from dpshm.dareplane.server import DefaultServer, is_loopback
from dpshm.errors import ConfigError, DpshmError
from dpshm.shm import registry

log = library_logger(__name__)

START_KEYS = ("worker", "streams", "kwargs")
STREAM_FIELDS = ("name", "type", "channels", "rate", "head", "stale")
_ALIASES = {"channels": ("channels", "n_channels"), "rate": ("rate", "srate", "nominal_srate")}


def to_json_line(obj: Any) -> str:
    """Serialise ``obj`` as one compact JSON line.

    Values JSON cannot hold become strings (``default=str``); NaN and
    infinities become ``null``, so strict parsers accept every reply.
    """
    try:
        return json.dumps(obj, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere
        return json.dumps(_finite(obj), separators=(",", ":"), default=str, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def stream_summary(info: Mapping[str, Any]) -> dict[str, Any]:
    """The ``LIST_STREAMS`` fields of one stream's status dict."""
    out = {}
    for key in STREAM_FIELDS:
        for alias in _ALIASES.get(key, (key,)):
            if alias in info:
                out[key] = info[alias]
                break
        else:
            out[key] = None
    return out


class Frontend:
    """The supervisor's commands, bound to a worker manager and status callables.

    Parameters
    ----------
    manager : WorkerManager
        Starts and stops the declared workers.
    streams_status : callable
        ``() -> list[dict]``, the supervisor's per-stream status.
    supervisor_status : callable, optional
        ``() -> dict`` about the supervisor; default: pid and uptime.
    """

    def __init__(
        self,
        manager: Any,
        streams_status: Callable[[], list[Mapping[str, Any]]],
        supervisor_status: Callable[[], Mapping[str, Any]] | None = None,
    ):
        self.manager = manager
        self._streams_status = streams_status
        self._supervisor_status = supervisor_status
        self._t0 = time.time()

    @property
    def pcommand_map(self) -> dict[str, Callable[..., str]]:
        """``{PCOMM: handler}`` to hand to the DefaultServer."""
        return {
            "LIST_STREAMS": self.list_streams,
            "STATUS": self.status,
            "START_WORKER": self.start_worker,
            "STOP_WORKER": self.stop_worker,
            "LIST_WORKERS": self.list_workers,
        }

    # -- commands -------------------------------------------------------------

    def list_streams(self, *args: Any, **kwargs: Any) -> str:
        """``LIST_STREAMS``: one JSON line, a list of stream summaries."""
        return self._guard(lambda: to_json_line(self._streams()))

    def status(self, *args: Any, **kwargs: Any) -> str:
        """``STATUS``: supervisor, streams and workers as one JSON line."""

        def run() -> str:
            if self._supervisor_status is not None:
                sup = dict(self._supervisor_status())
            else:
                sup = {"pid": os.getpid(), "uptime_s": round(time.time() - self._t0, 3)}
            streams = [dict(s) for s in self._streams_status()]
            for s in streams:
                s.update(stream_summary(s))
            return to_json_line(
                {"supervisor": sup, "streams": streams, "workers": self.manager.status()}
            )

        return self._guard(run)

    def start_worker(self, *args: Any, **kwargs: Any) -> str:
        """``START_WORKER|{"worker": NAME, "streams": [...], "kwargs": {...}}``.

        Replies the worker id. The positional form ``START_WORKER|NAME|``
        also works, for a worker that needs no streams.
        """

        def run() -> str:
            if args and "worker" not in kwargs:
                kwargs["worker"] = args[0]
            elif args:
                raise DpshmError(
                    f"unexpected positional arguments {list(args)!r}; send "
                    'START_WORKER|{"worker": NAME, "streams": [...], "kwargs": {...}}'
                )
            extra = sorted(set(kwargs) - set(START_KEYS))
            if extra:
                why = ""
                if "target" in extra:
                    why = " Only declared worker names can be started, never a target."
                raise DpshmError(
                    f"START_WORKER does not accept {extra}; allowed keys are "
                    f"{list(START_KEYS)}.{why}"
                )
            name = kwargs.get("worker")
            if not isinstance(name, str) or not name:
                raise DpshmError(
                    f'START_WORKER needs "worker": one of {self.manager.declared}, got {name!r}.'
                )
            streams = kwargs.get("streams") or []
            if isinstance(streams, str):
                streams = [streams]
            if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
                raise DpshmError(f'"streams" must be a list of stream names, got {streams!r}.')
            wkw = kwargs.get("kwargs") or {}
            if not isinstance(wkw, dict):
                raise DpshmError(f'"kwargs" must be a JSON object, got {wkw!r}.')
            return self.manager.start(name, streams, wkw)

        return self._guard(run)

    def stop_worker(self, *args: Any, **kwargs: Any) -> str:
        """``STOP_WORKER|{"id": ID}``: stop one worker; replies its final status."""

        def run() -> str:
            wid = kwargs.get("id", args[0] if len(args) == 1 else None)
            extra = sorted(set(kwargs) - {"id"})
            if extra or not isinstance(wid, str):
                raise DpshmError(
                    f'STOP_WORKER needs {{"id": ID}} (an id START_WORKER replied), got '
                    f"args={list(args)!r} kwargs={kwargs!r}."
                )
            return to_json_line(self.manager.stop(wid))

        return self._guard(run)

    def list_workers(self, *args: Any, **kwargs: Any) -> str:
        """``LIST_WORKERS``: declared workers and every known instance."""

        def run() -> str:
            declared = {}
            for name in self.manager.declared:
                spec = self.manager.spec(name)
                declared[name] = {
                    "mode": spec.mode,
                    "target": spec.target,
                    "kwargs": dict(spec.kwargs),
                    "params": {
                        k: p.as_dict() for k, p in (getattr(spec, "params", None) or {}).items()
                    },
                    "restart": spec.restart.policy,
                    "max_restarts": spec.restart.max_restarts,
                }
            return to_json_line({"declared": declared, "workers": self.manager.status()})

        return self._guard(run)

    def stop_all(self) -> list[str]:
        """What the built-in ``STOP`` does here: stop every worker."""
        return self.manager.stop_all()

    # -- helpers --------------------------------------------------------------

    def _streams(self) -> list[dict[str, Any]]:
        return [stream_summary(s) for s in self._streams_status()]

    def _guard(self, run: Callable[[], str]) -> str:
        """Run a command; turn an expected refusal into an ``ERROR`` line."""
        try:
            return run() + "\n"
        except (DpshmError, LookupError, ValueError, TypeError) as exc:
            log.warning("command refused: %s", exc)
            return error_line(exc)


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token.

    Raises
    ------
    ConfigError
        When ``host`` is reachable from other machines and no token is set.
    """
    if not token and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the supervisor's commands on {host!r} without a token: "
            "anyone who can reach that address could start and stop workers. Set "
            '[server] token = "..." in the config (clients then send AUTH|<token> once '
            "per connection), or bind to 127.0.0.1."
        )


class SupervisorServer(DefaultServer):
    """The supervisor's :class:`~dpshm.dareplane.server.DefaultServer`.

    Serves ``frontend.pcommand_map``; ``STOP`` also stops every worker; when
    the server stops listening (``CLOSE`` or :meth:`shutdown`) the workers are
    stopped and ``on_close`` is called, so the supervisor can shut down. Run it
    as any DefaultServer: ``init_server()`` then ``start_listening()`` (e.g.
    in a thread).

    Parameters
    ----------
    frontend : Frontend
        The commands.
    port : int
        TCP port (0: any free port; read ``port`` after ``init_server()``).
    ip : str
        Address to bind; a non-loopback address needs ``token``.
    token : str, optional
        Shared secret; clients send ``AUTH|<token>`` once per connection.
    on_close : callable, optional
        Called once the server has stopped listening.
    **kwargs
        Passed to :class:`~dpshm.dareplane.server.DefaultServer`.

    Raises
    ------
    ConfigError
        A non-loopback ``ip`` without ``token`` (see :func:`check_bind`).
    """

    quiet_pcomms = frozenset({"LIST_STREAMS", "LIST_WORKERS", "STATUS"})

    def __init__(
        self,
        frontend: Frontend,
        port: int = DEFAULT_SERVER_PORT,
        ip: str = "127.0.0.1",
        *,
        token: str | None = None,
        on_close: Callable[[], None] | None = None,
        name: str = "dpshm",
        **kwargs: Any,
    ):
        check_bind(ip, token)
        kwargs.setdefault("logger", log)  # forwarding to 9020 is the frontend's choice (log_port)
        super().__init__(
            port, ip, name=name, pcommand_map=frontend.pcommand_map, token=token or None, **kwargs
        )
        self.frontend = frontend
        self._on_close = on_close

    def close_threads(self) -> None:
        """Stop what the server started, then every worker (the ``STOP`` built-in)."""
        super().close_threads()
        self.frontend.stop_all()

    def _on_listen_stop(self) -> None:
        super()._on_listen_stop()
        if self._on_close is not None:
            self._on_close()


class SupervisorFrontend:
    """Workers, commands and server of a running supervisor (what ``dpshm up`` runs).

    Builds a :class:`~dpshm.control.workers.WorkerManager` from ``config.workers``
    (targets imported from the config file's directory first), resolves
    stream names through the supervisor's status (workers attach by registry
    key, so their views follow generation changes), and serves the commands
    on ``config.server`` (``port`` overrides its port) in a background
    thread. ``CLOSE`` calls ``supervisor.stop()``. The bound address (and whether
    a token is needed, never the token) goes into the supervisor's registry as
    the endpoints ``commands`` and ``commands_auth``: ``dpshm view`` finds the
    command server there.

    Parameters
    ----------
    supervisor : Supervisor
        Needs ``status()`` (``{"streams": {key: {...}}, ...}``), ``stop()`` and
        ``add_endpoints()``.
    config : SupervisorConfig
        ``server``, ``workers``, ``namespace`` and ``source`` are used.
    port : int, optional
        Overrides ``config.server.port`` (``dpshm up --port``).
    log_port : int or None
        The workers' records (logger ``dpshm.worker``) are also sent to a
        Dareplane log server on ``127.0.0.1:log_port`` whenever one listens
        (default 9020; never blocks, buffers a bounded number of records
        while none listens). ``None``: don't.
    **server_kwargs
        Passed to :class:`SupervisorServer`.

    Raises
    ------
    ConfigError
        A non-loopback host without a token (nothing is started then).
    OSError
        The port cannot be bound.
    """

    _log_handler: logging.Handler | None = None

    def __init__(
        self,
        supervisor: Any,
        config: Any,
        port: int | None = None,
        log_port: int | None = DEFAULT_LOG_PORT,
        **server_kwargs: Any,
    ):
        self._sup = supervisor
        srv = config.server
        token = srv.token or None
        check_bind(srv.host, token)
        source = Path(str(config.source))
        search = str(source.resolve().parent) if source.is_file() else None
        self.manager = WorkerManager(
            config.workers,
            resolve=self.resolve,
            attach=functools.partial(attach_view, namespace=config.namespace),
            search_path=search,
            stream_names=self.stream_names,
            namespace=config.namespace,
        )
        try:
            self.frontend = Frontend(self.manager, self.streams_status, self.supervisor_status)
            self.server = SupervisorServer(
                self.frontend,
                srv.port if port is None else int(port),
                srv.host,
                token=token,
                on_close=supervisor.stop,
                **server_kwargs,
            )
            self.server.init_server()
        except BaseException:
            self.manager.close()
            raise
        if log_port is not None:
            self._log_handler = JsonSocketHandler("127.0.0.1", log_port)
            logging.getLogger(WORKER_LOGGER_PREFIX).addHandler(self._log_handler)
        self._thread = threading.Thread(
            target=self.server.start_listening, name="dpshm-server", daemon=True
        )
        self._thread.start()
        host = f"[{srv.host}]" if ":" in srv.host else srv.host
        supervisor.add_endpoints(  # found by `dpshm view`; the token itself is never written
            {"commands": f"tcp://{host}:{self.server.port}",
             "commands_auth": "token" if token else "none"}
        )  # fmt: skip
        log.info(
            "supervisor commands on %s:%d (workers: %s)",
            srv.host, self.server.port, self.manager.declared,
        )  # fmt: skip

    @property
    def port(self) -> int:
        """The TCP port the commands are served on."""
        return self.server.port

    def streams_status(self) -> list[dict[str, Any]]:
        """One status dict per stream (the supervisor's, with its ``key``)."""
        streams = self._sup.status().get("streams", {})
        return [{"key": k, **v} for k, v in streams.items()]

    def stream_names(self) -> list[tuple[str, str]]:
        """``(name, source_id)`` of every stream the supervisor shares (stale ones too)."""
        return [(str(s.get("name")), str(s.get("source_id"))) for s in self.streams_status()]

    def supervisor_status(self) -> dict[str, Any]:
        """The supervisor's own status, plus where its commands are served."""
        st = {k: v for k, v in self._sup.status().items() if k != "streams"}
        st.update(host=self.server.ip, port=self.server.port, workers=self.manager.declared)
        return st

    def resolve(self, stream: str) -> str:
        """Stream name (or registry key / source_id) -> registry key.

        The lookup rules and errors are :func:`dpshm.shm.registry.find_stream`'s.
        """
        entries = [registry.StreamEntry.from_json(s["key"], s) for s in self.streams_status()]
        return registry.find_stream(entries, stream, where="this supervisor").key

    def close(self) -> None:
        """Stop serving and stop every worker. Idempotent."""
        self._sup.add_endpoints({"commands": "", "commands_auth": ""})
        self.server.shutdown()
        self._thread.join(10)
        self.manager.close()
        handler, self._log_handler = self._log_handler, None
        if handler is not None:
            logging.getLogger(WORKER_LOGGER_PREFIX).removeHandler(handler)
            handler.close()

    def __enter__(self) -> SupervisorFrontend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
