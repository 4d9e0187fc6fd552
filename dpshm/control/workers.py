"""Start, watch, restart and stop the supervisor's workers.

A worker is a function ``target(ctx)`` declared in the configuration as a
``[workers.NAME]`` table (see :mod:`dpshm.config`); only declared workers can
be started, and only the declared target strings are ever imported. Each
started instance gets an id (``NAME-<n>``) and a
:class:`~dpshm.control.context.WorkerContext`.

Modes
-----
``thread``
    The target runs in a daemon thread of the supervisor with views attached
    by the supervisor. Stopping sets ``ctx.stop_event`` and joins for
    ``stop_timeout_s``; a thread that does not return by then is reported as
    ``stuck`` (in the log and the status), never silently forgotten.
``process``
    The target runs in a fresh interpreter (``multiprocessing`` spawn
    context) that attaches to the rings itself: it gets ring names, not
    objects, and opens no LSL inlet. Its log records come back over a pipe and
    are re-emitted on ``logging.getLogger("dpshm.worker.<id>")``. Stopping
    asks the worker to stop (``ctx.stop_event``), waits ``grace_s``, then
    sends SIGTERM to the process tree, waits ``grace_s`` again and SIGKILLs
    what is left.

Failures and restarts
---------------------
A target that raises, or a process that exits non-zero or is killed from
outside, is ``failed``: the traceback (or exit code / signal) is logged and
kept in the status; other workers carry on. One monitor thread waits on every
worker process's sentinel and pipe at once (``multiprocessing.connection.wait``),
so a process killed from outside is noticed at once, without polling. With
``restart = "on-failure"`` a failed worker is started again under the same id
after ``backoff_s * 2**k`` seconds (``k`` = restarts so far, capped at
:data:`MAX_BACKOFF_S`), at most ``max_restarts`` times.

States: ``starting`` (a process worker until its target is called),
``running``, ``stopping``, ``stopped`` (on request), ``finished``
(the target returned / exit code 0), ``failed``, ``restarting`` (waiting for
its backoff), ``stuck`` (a thread that ignored its stop event).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.connection as mpc
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dpshm._logging import library_logger
from dpshm._wake import Waker
from dpshm.config import namespace_from_env, worker_source_id
from dpshm.control.context import (
    WorkerContext,
    attach_all,
    attach_view,
    load_target,
    worker_logger_name,
)
from dpshm.control.worker_proc import ProcessHandle, describe_exit
from dpshm.errors import DpshmTimeoutError, WorkerError
from dpshm.params import check_kwargs

log = library_logger(__name__)

MODES = ("thread", "process")
DEFAULT_STOP_TIMEOUT_S = 5.0
DEFAULT_GRACE_S = 2.0
DEFAULT_MAX_WORKERS = 32
MAX_BACKOFF_S = 60.0
_MONITOR_TICK_S = 1.0  # upper bound of one monitor wait; wakes come from the pipe
_ENDED = ("stopped", "finished", "failed")


@dataclass
class _Worker:
    """Book-keeping of one worker id (kept across restarts)."""

    id: str
    spec: Any
    streams: list[str]
    rings: dict[str, str]
    kwargs: dict[str, Any]
    state: str = "starting"
    restarts: int = 0
    started_at: float = 0.0
    ended_at: float | None = None
    exitcode: int | None = None
    error: str | None = None
    next_restart_at: float | None = None
    stop_requested: bool = False
    ended: threading.Event = field(default_factory=threading.Event)
    # thread mode
    thread: threading.Thread | None = None
    stop_event: threading.Event | None = None
    # process mode
    handle: ProcessHandle | None = None
    pid: int | None = None

    @property
    def mode(self) -> str:
        return self.spec.mode

    def as_dict(self, now: float) -> dict[str, Any]:
        policy = self.spec.restart
        return {
            "id": self.id,
            "worker": self.spec.name,
            "mode": self.mode,
            "state": self.state,
            "streams": list(self.streams),
            "kwargs": self.kwargs,
            "pid": self.pid if self.mode == "process" else os.getpid(),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exitcode": self.exitcode,
            "error": self.error,
            "restart": policy.policy,
            "restarts": self.restarts,
            "max_restarts": policy.max_restarts,
            "next_restart_in": (
                None if self.next_restart_at is None else max(0.0, self.next_restart_at - now)
            ),
        }


def _identity(stream: str) -> str:
    return stream


class WorkerManager:
    """Start and stop declared workers; watch them; apply the restart policy.

    Parameters
    ----------
    specs : mapping of str to WorkerConfig
        The declared workers (``SupervisorConfig.workers``): objects with
        ``name``, ``target``, ``mode``, ``kwargs`` and ``restart`` (with
        ``policy``, ``max_restarts``, ``backoff_s``).
    resolve : callable, optional
        Stream name -> ring name; raises ``LookupError`` (e.g.
        :class:`~dpshm.errors.StreamNotFoundError`) for an unknown stream. The
        default treats stream names as ring names.
    attach : callable, optional
        Ring name -> view. Must be a picklable module-level function (process
        workers call it in their own interpreter). Default:
        :func:`~dpshm.control.context.attach_view` (a ``SharedStreamView``).
    search_path : str, optional
        Directory searched first when importing targets (the configuration
        file's directory).
    stop_timeout_s : float
        How long a thread worker may take to return after its stop event.
    grace_s : float
        How long a process worker gets after the stop request, and again after
        SIGTERM, before it is killed.
    max_workers : int
        At most this many workers run at once; more are refused.
    stream_names : callable, optional
        ``() -> iterable of (name, source_id)``: the streams that exist now. A
        kwarg declared ``stream_name`` (a stream the worker will publish) may
        not take a name one of them holds, unless it is this worker's own
        earlier output (same ``source_id``), nor a name a running worker was
        given.
    namespace : str, optional
        The supervisor's namespace (default ``$DPSHM_NAMESPACE``): where
        ``ctx.publish_stream`` publishes. Worker ``NAME`` publishes under
        :func:`~dpshm.config.worker_source_id` ``(namespace, NAME)``
        (:attr:`~dpshm.control.context.WorkerContext.source_id`).
    """

    def __init__(
        self,
        specs: Mapping[str, Any],
        *,
        resolve: Callable[[str], str] | None = None,
        attach: Callable[[str], Any] = attach_view,
        search_path: str | None = None,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        grace_s: float = DEFAULT_GRACE_S,
        max_workers: int = DEFAULT_MAX_WORKERS,
        stream_names: Callable[[], Iterable[tuple[str, str]]] | None = None,
        namespace: str | None = None,
    ):
        for name, spec in specs.items():
            if spec.mode not in MODES:
                raise WorkerError(
                    f"worker {name!r} has mode {spec.mode!r}; use one of {list(MODES)}."
                )
        self._specs = dict(specs)
        self._resolve = resolve or _identity
        self._attach = attach
        self._search_path = search_path
        self.stop_timeout_s = float(stop_timeout_s)
        self.grace_s = float(grace_s)
        self.max_workers = int(max_workers)
        self._stream_names = stream_names
        self._namespace = namespace
        self._lock = threading.RLock()
        self._workers: dict[str, _Worker] = {}
        self._counter = 0
        self._closed = False
        self._mp = multiprocessing.get_context("spawn")
        self._waker = Waker()
        self._monitor = threading.Thread(
            target=self._monitor_loop, name="dpshm-workers-monitor", daemon=True
        )
        self._monitor.start()

    # -- public API ---------------------------------------------------------

    @property
    def declared(self) -> list[str]:
        """Names of the workers that may be started."""
        return sorted(self._specs)

    def spec(self, name: str) -> Any:
        """The declaration of worker ``name`` (``WorkerConfig``)."""
        try:
            return self._specs[name]
        except KeyError:
            raise WorkerError(f"unknown worker {name!r}; declared: {self.declared}.") from None

    def start(
        self,
        name: str,
        streams: Iterable[str] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """Start the declared worker ``name`` on ``streams``; return its id.

        Raises
        ------
        WorkerError
            Unknown (undeclared) name, too many workers, a target that cannot
            be imported (thread mode), or a manager that is closed.
        LookupError
            A stream that does not exist (from the resolver).
        """
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            hint = ""
            if isinstance(name, str) and (":" in name or "/" in name):
                hint = " It looks like a target string: only declared worker names are accepted."
            raise WorkerError(
                f"unknown worker {name!r}.{hint} Declared workers: {self.declared}. "
                "Declare it as a [workers.NAME] table in the supervisor's config."
            )
        streams = list(streams or [])
        params = getattr(spec, "params", None) or {}
        checked = check_kwargs(name, params, dict(kwargs or {}))
        rings = {s: self._resolve(s) for s in streams}
        merged = {**dict(spec.kwargs), **checked}
        with self._lock:
            if self._closed:
                raise WorkerError("the worker manager is closed; no worker can be started.")
            self._check_names(spec, params, merged)
            running = sum(1 for w in self._workers.values() if w.state not in _ENDED)
            if running >= self.max_workers:
                raise WorkerError(
                    f"{running} workers are running, the limit is {self.max_workers}; "
                    "stop some first (STOP_WORKER or STOP)."
                )
            self._counter += 1
            w = _Worker(
                id=f"{name}-{self._counter}", spec=spec, streams=streams, rings=rings, kwargs=merged
            )
            self._launch(w)  # raises before registering when a thread target fails to load
            self._workers[w.id] = w
            self._prune()
        log.info("started worker %s (%s, streams %s)", w.id, spec.mode, streams)
        return w.id

    def source_id(self, name: str) -> str:
        """The LSL source_id worker ``name`` publishes under (every instance)."""
        return worker_source_id(self._namespace or namespace_from_env(), name)

    def _check_names(self, spec: Any, params: Mapping[str, Any], merged: Mapping[str, Any]):
        """Refuse a ``stream_name`` kwarg another stream or running worker holds (lock held)."""
        wanted = [(k, merged.get(k)) for k, p in params.items() if p.type == "stream_name"]
        wanted = [(k, v) for k, v in wanted if v is not None]
        if not wanted:
            return
        mine = self.source_id(spec.name)
        held = {}
        for stream, source in self._stream_names() if self._stream_names else ():
            if source != mine:
                held.setdefault(stream, source)
        for w in self._workers.values():
            if w.state in _ENDED:
                continue
            wparams = getattr(w.spec, "params", None) or {}
            for k, p in wparams.items():
                if p.type == "stream_name" and k in w.kwargs:
                    held.setdefault(w.kwargs[k], f"worker {w.id}")
        for key, value in wanted:
            if value in held:
                raise WorkerError(
                    f"worker {spec.name!r} cannot publish {key}={value!r}: that name is held "
                    f"by {held[value]!r}; consumers would then find two streams of that name. "
                    "Choose another name."
                )

    def stop(self, worker_id: str) -> dict[str, Any]:
        """Stop one worker (bounded wait); return its final status.

        Raises
        ------
        WorkerError
            When no worker has this id.
        """
        w = self._get(worker_id)
        with self._lock:
            w.stop_requested = True
            w.next_restart_at = None
            if w.state == "restarting":
                self._set_ended(w, "stopped")
            if w.state in _ENDED:
                return w.as_dict(time.time())
            w.state = "stopping"
        if w.mode == "thread":
            self._stop_thread(w)
        else:
            self._stop_process(w)
        return w.as_dict(time.time())

    def stop_all(self) -> list[str]:
        """Stop every running worker; return the ids that were stopped."""
        with self._lock:
            ids = [w.id for w in self._workers.values() if w.state not in _ENDED]
        # ask all first so they wind down in parallel, then wait for each
        for wid in ids:
            w = self._workers[wid]
            with self._lock:
                w.stop_requested = True
                w.next_restart_at = None
            if w.mode == "thread" and w.stop_event is not None:
                w.stop_event.set()
            elif w.handle is not None:
                w.handle.request_stop()
        for wid in ids:
            self.stop(wid)
        return ids

    def status(self) -> list[dict[str, Any]]:
        """Status of every known worker (running and recently ended), oldest first."""
        now = time.time()
        with self._lock:
            return [w.as_dict(now) for w in self._workers.values()]

    def get(self, worker_id: str) -> dict[str, Any]:
        """Status of one worker; :class:`WorkerError` if the id is unknown."""
        return self._get(worker_id).as_dict(time.time())

    def wait(self, worker_id: str, timeout: float) -> dict[str, Any]:
        """Wait until the worker has ended.

        Ended: stopped, finished or failed without a pending restart. Raises
        :class:`DpshmTimeoutError` after ``timeout`` seconds.
        """
        w = self._get(worker_id)
        if not w.ended.wait(timeout):
            raise DpshmTimeoutError(f"worker {worker_id!r} still {w.state!r} after {timeout} s.")
        return w.as_dict(time.time())

    def close(self) -> None:
        """Stop all workers and the monitor thread. Idempotent."""
        if self._closed:
            return
        self.stop_all()
        with self._lock:
            self._closed = True
        self._wake()
        self._monitor.join(timeout=2 * _MONITOR_TICK_S)
        self._waker.close()

    def __enter__(self) -> WorkerManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- launching ------------------------------------------------------------

    def _get(self, worker_id: str) -> _Worker:
        with self._lock:
            w = self._workers.get(worker_id) if isinstance(worker_id, str) else None
        if w is None:
            raise WorkerError(
                f"unknown worker id {worker_id!r}; known ids: {sorted(self._workers)}. "
                "START_WORKER replies the id to use; LIST_WORKERS lists them."
            )
        return w

    def _launch(self, w: _Worker) -> None:
        w.state = "running"
        w.started_at = time.time()
        w.ended_at = w.exitcode = None
        w.ended.clear()
        if w.mode == "thread":
            self._launch_thread(w)
        else:
            self._launch_process(w)

    def _launch_thread(self, w: _Worker) -> None:
        func = load_target(w.spec.target, self._search_path)
        views = attach_all(w.rings, self._attach)
        w.stop_event = threading.Event()
        ctx = WorkerContext(
            id=w.id,
            name=w.spec.name,
            streams=views,
            stop_event=w.stop_event,
            logger=logging.getLogger(worker_logger_name(w.id)),
            kwargs=dict(w.kwargs),
            namespace=self._namespace,
            source_id=self.source_id(w.spec.name),
        )
        w.thread = threading.Thread(
            target=self._run_thread, args=(w, func, ctx), name=f"dpshm-worker-{w.id}", daemon=True
        )
        w.thread.start()

    def _run_thread(self, w: _Worker, func: Callable[[WorkerContext], Any], ctx: WorkerContext):
        error = None
        try:
            func(ctx)
        except BaseException:
            error = traceback.format_exc()
            ctx.logger.error("worker %s failed:\n%s", w.id, error.rstrip())
        finally:
            ctx.close()
        with self._lock:
            if w.thread is not threading.current_thread():
                return  # a restarted instance owns the record now
            if error is not None:
                w.error = error
            if error is not None and not w.stop_requested:
                self._failed(w)
            else:
                self._set_ended(w, "stopped" if w.stop_requested else "finished")

    def _launch_process(self, w: _Worker) -> None:
        payload = {
            "id": w.id,
            "name": w.spec.name,
            "target": w.spec.target,
            "search_path": self._search_path,
            "rings": dict(w.rings),
            "kwargs": dict(w.kwargs),
            "source_id": self.source_id(w.spec.name),
            "log_level": logging.getLogger(worker_logger_name(w.id)).getEffectiveLevel(),
            "attach": self._attach,
            "namespace": self._namespace,
        }
        w.handle = ProcessHandle(self._mp, payload)
        w.pid = w.handle.pid
        w.state = "starting"
        self._wake()

    # -- stopping -------------------------------------------------------------

    def _stop_thread(self, w: _Worker) -> None:
        assert w.stop_event is not None and w.thread is not None
        w.stop_event.set()
        w.thread.join(self.stop_timeout_s)
        if w.thread.is_alive():
            with self._lock:
                w.state = "stuck"
                w.error = (
                    f"thread did not return within {self.stop_timeout_s} s after its stop "
                    "event; it keeps running as a daemon thread. Make the target check "
                    "ctx.stop_event."
                )
            logging.getLogger(worker_logger_name(w.id)).error("worker %s: %s", w.id, w.error)

    def _stop_process(self, w: _Worker) -> None:
        handle = w.handle
        if handle is not None:
            handle.request_stop()
        if w.ended.wait(self.grace_s) or handle is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = handle.signal_tree(sig, self.grace_s)
            if w.ended.wait(self.grace_s) and not alive:
                return
        log.error("worker %s (pid %s) or its children did not end after SIGKILL", w.id, w.pid)

    # -- monitoring -----------------------------------------------------------

    def _wake(self) -> None:
        self._waker.wake()

    def _monitor_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                procs = [w for w in self._workers.values() if w.handle is not None]
                objs: list[Any] = [self._waker]
                for w in procs:
                    objs.extend(w.handle.waitables())  # type: ignore[union-attr]
                due = [w.next_restart_at for w in self._workers.values() if w.next_restart_at]
            timeout = _MONITOR_TICK_S
            if due:
                timeout = max(0.0, min(timeout, min(due) - time.time()))
            try:
                ready = set(mpc.wait(objs, timeout))
            except OSError:  # a pipe closed under us; rebuild the set
                ready = set()
            if self._waker in ready:
                self._waker.drain()
            for w in procs:
                h = w.handle
                if h is None:
                    continue
                emit = functools.partial(self._emit, w.id)
                if h.sentinel in ready:
                    self._reaped(w, h.reap(emit))
                    continue
                if h.conn_open and h.conn in ready:
                    h.drain(emit, functools.partial(self._running, w))
            self._restart_due()

    def _running(self, w: _Worker) -> None:
        """A process worker attached its streams and called its target."""
        with self._lock:
            if w.state == "starting":
                w.state = "running"

    @staticmethod
    def _emit(worker_id: str, record: logging.LogRecord) -> None:
        """Re-emit a process worker's record on ``dpshm.worker.<id>``."""
        target = logging.getLogger(worker_logger_name(worker_id))
        if target.isEnabledFor(record.levelno):
            target.handle(record)

    def _reaped(self, w: _Worker, code: int | None) -> None:
        h = w.handle
        assert h is not None
        with self._lock:
            w.handle = None
            w.exitcode = code
            if w.stop_requested:
                self._set_ended(w, "stopped")
            elif code == 0:
                self._set_ended(w, "finished")
            else:
                reason = describe_exit(code)
                w.error = f"process {w.pid} {reason}" + (f"\n{h.traceback}" if h.traceback else "")
                logging.getLogger(worker_logger_name(w.id)).error(
                    "worker %s: process %s %s", w.id, w.pid, reason
                )
                self._failed(w)

    def _failed(self, w: _Worker) -> None:
        """Mark ``w`` failed and schedule a restart if its policy allows (lock held)."""
        policy = w.spec.restart
        if policy.policy == "on-failure" and w.restarts < policy.max_restarts and not self._closed:
            delay = min(policy.backoff_s * 2**w.restarts, MAX_BACKOFF_S)
            w.state = "restarting"
            w.ended_at = time.time()
            w.next_restart_at = time.time() + delay
            logging.getLogger(worker_logger_name(w.id)).warning(
                "worker %s failed; restart %d of %d in %.2f s",
                w.id,
                w.restarts + 1,
                policy.max_restarts,
                delay,
            )
            self._wake()
        else:
            self._set_ended(w, "failed")

    def _set_ended(self, w: _Worker, state: str) -> None:
        w.state = state
        w.ended_at = time.time()
        w.next_restart_at = None
        w.ended.set()

    def _restart_due(self) -> None:
        now = time.time()
        with self._lock:
            due = [
                w
                for w in self._workers.values()
                if w.next_restart_at is not None and w.next_restart_at <= now
            ]
            for w in due:
                w.next_restart_at = None
                w.restarts += 1
                try:
                    self._launch(w)
                    log.info("restarted worker %s (restart %d)", w.id, w.restarts)
                except Exception as exc:
                    w.error = f"restart failed: {type(exc).__name__}: {exc}"
                    logging.getLogger(worker_logger_name(w.id)).error(
                        "worker %s: %s", w.id, w.error
                    )
                    self._failed(w)

    def _prune(self, keep: int = 100) -> None:
        """Forget the oldest ended workers beyond ``keep`` (lock held)."""
        ended = [wid for wid, w in self._workers.items() if w.state in _ENDED]
        for wid in ended[: max(0, len(ended) - keep)]:
            del self._workers[wid]
