"""What every worker runs with, in either mode.

The ``ctx`` object (:class:`WorkerContext`), loading a declared target, and
attaching and closing its stream views.

Thread workers (:mod:`dpshm.control.workers`) and process workers
(:mod:`dpshm.control.worker_proc`) both build their context from here.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dpshm._logging import library_logger
from dpshm.errors import WorkerError

WORKER_LOGGER_PREFIX = "dpshm.worker"


@dataclass
class WorkerContext:
    """The single argument a worker target receives.

    Attributes
    ----------
    id : str
        The worker id, e.g. ``"bandpower-1"`` (what ``START_WORKER`` replied).
    name : str
        The declared worker name (the ``[workers.NAME]`` table).
    streams : dict[str, SharedStreamView]
        Stream name -> a view attached to that stream's ring, owned by this
        worker (closed for it when the target returns).
    stop_event : threading.Event
        Set when the worker must stop; return from the target soon after.
    logger : logging.Logger
        ``dpshm.worker.<id>``; its records reach the supervisor's log stream.
    kwargs : dict
        The declared defaults updated with the kwargs sent in ``START_WORKER``
        (only keys declared in ``[workers.NAME.params]``, checked against their
        types and bounds).
    namespace : str or None
        The supervisor's namespace (where :meth:`publish_stream` publishes).
    source_id : str
        The LSL ``source_id`` to publish an outlet under (the same for every
        instance of this worker, so a restarted worker's stream continues the
        same ring instead of adding a second stream of that name); ``""`` when
        the worker runs outside a supervisor.
    publishers : list of StreamPublisher
        The streams this worker published; closed for it when the target returns.
    """

    id: str
    name: str
    streams: dict[str, Any]
    stop_event: threading.Event
    logger: logging.Logger
    kwargs: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    source_id: str = ""
    publishers: list[Any] = field(default_factory=list)

    def publish_stream(self, name: str, n_channels: int, rate: float, *args: Any, **kwargs: Any):
        """Publish a stream from this worker (see :func:`dpshm.publish_stream`).

        Same parameters; the namespace defaults to the supervisor's. The
        publisher is closed when the worker ends (the stream turns stale).
        """
        from dpshm.shm.publish import publish_stream

        kwargs.setdefault("namespace", self.namespace)
        pub = publish_stream(name, n_channels, rate, *args, **kwargs)
        self.publishers.append(pub)
        return pub

    def close(self) -> None:
        """Close the views and the publishers of this worker, logging what fails."""
        pubs, self.publishers = self.publishers, []
        close_all({f"published {p.name}": p for p in pubs}, self.logger)
        close_all(self.streams, self.logger)


def worker_logger_name(worker_id: str) -> str:
    """Name of the logger a worker's records are emitted on."""
    return f"{WORKER_LOGGER_PREFIX}.{worker_id}"


def load_target(target: str, search_path: str | None = None) -> Callable[[WorkerContext], Any]:
    """Import ``"package.module:function"`` and return the callable.

    Only strings declared in the configuration reach this function.

    Parameters
    ----------
    target : str
        ``module:attribute`` (the attribute may be dotted, ``mod:Class.method``).
    search_path : str, optional
        A directory searched first for the module (the configuration file's
        directory, so examples next to a config import as they are).

    Raises
    ------
    WorkerError
        When the module cannot be imported or the attribute is missing or not
        callable; the message names the target and the cause.
    """
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise WorkerError(f"worker target {target!r} must look like 'package.module:function'.")
    if search_path and search_path not in sys.path:
        sys.path.insert(0, search_path)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise WorkerError(
            f"cannot import module {module_name!r} of worker target {target!r}: "
            f"{type(exc).__name__}: {exc}. Check the target in the config and that the "
            "module is importable by the supervisor."
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise WorkerError(
                f"worker target {target!r}: module {module_name!r} has no attribute "
                f"{attr_path!r}. Check the function name after the ':'."
            ) from None
    if not callable(obj):
        raise WorkerError(f"worker target {target!r} is not callable (got {type(obj).__name__}).")
    return obj


def attach_view(name: str, namespace: str | None = None) -> Any:
    """Attach a :class:`~dpshm.shm.view.SharedStreamView` (the default way workers attach).

    Parameters
    ----------
    name : str
        A ring name, or (with ``namespace``) a stream's registry key, so the
        view follows the stream across generations and supervisor restarts.
    namespace : str, optional
        The supervisor's namespace.
    """
    from dpshm.shm.view import SharedStreamView

    if namespace is None:
        return SharedStreamView(name)
    return SharedStreamView(name, namespace=namespace)


def attach_all(rings: Mapping[str, str], attach: Callable[[str], Any]) -> dict[str, Any]:
    """Attach one view per ``stream -> ring``; on failure close what was attached."""
    views: dict[str, Any] = {}
    try:
        for stream, ring in rings.items():
            views[stream] = attach(ring)
    except BaseException:
        close_all(views)
        raise
    return views


def close_all(views: Mapping[str, Any], logger: logging.Logger | None = None) -> None:
    """Close every view (or publisher), logging (not raising) what fails."""
    for stream, view in views.items():
        close = getattr(view, "close", None)
        if close is None:
            continue
        try:
            close()
        except Exception:  # a failing close must not hide the others
            (logger or library_logger(__name__)).exception(
                "closing the view of stream %r failed", stream
            )
