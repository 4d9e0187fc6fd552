"""How a consumer finds and follows a supervised stream (used by SharedStreamView).

A :class:`StreamLink` turns what the user asked for (an LSL stream name, a
source_id, or a plain ring name) into the ring to attach, subscribes to that
stream's wake-ups, and tells the view when to re-attach:

* the supervisor bumped the stream's generation (its format changed), or
* the supervisor was restarted (its rings are new),

both seen as a changed ``registry.json`` (one ``stat()`` at most every
:data:`CHECK_EVERY_S`, only while no wake-up comes) or as a wake-up carrying
another generation.

Wake path (one choice, documented in docs/supervisor.md): on Linux a
supervised view waits on a :class:`~dpshm.shm.doorbell.Doorbell` (an abstract UNIX
datagram socket the supervisor rings after each write); elsewhere, or with
``DPSHM_WAKE=zmq``, on the ZeroMQ head updates. While no bell comes the
subscription is re-sent every :data:`CHECK_EVERY_S` (the supervisor ignores
duplicates), so a restarted supervisor or a lost subscription costs latency,
never data. Rings that no supervisor announces fall back to watching the head
with short sleeps.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from dpshm._logging import library_logger
from dpshm.config import namespace_from_env
from dpshm.dareplane.procs import pid_alive
from dpshm.errors import (
    ConfigError,
    NoSupervisorError,
    RingNotFoundError,
    StreamNotFoundError,
    SupervisorNotRunningError,
)
from dpshm.shm import doorbell, registry
from dpshm.shm.bus import HeadSubscriber
from dpshm.shm.ring import SharedRing, list_rings

log = library_logger(__name__)

POLL_FALLBACK_S = 0.002  # head polling period for rings without a supervisor
CHECK_EVERY_S = 0.25  # registry stat() throttle; notifications of a new generation force it
ALIVE_EVERY_S = 1.0  # while no wake-up comes: is the supervisor process still alive?
ENV_WAKE = "DPSHM_WAKE"  # "doorbell" (default where available) or "zmq"
WAKE_CHOICES = ("doorbell", "zmq")


def wake_path(env: dict[str, str] | None = None) -> str:
    """The wake path consumers use: ``$DPSHM_WAKE``, else doorbell where available."""
    env = os.environ if env is None else env
    want = env.get(ENV_WAKE, "").strip().lower()
    if want and want not in WAKE_CHOICES:
        raise ConfigError(
            f"${ENV_WAKE}={env[ENV_WAKE]!r} is not a wake path; use one of {WAKE_CHOICES} "
            "or unset it"
        )
    if want == "zmq" or not doorbell.AVAILABLE:
        return "zmq"
    return "doorbell"


@dataclass(frozen=True)
class Target:
    """What to attach to: a ring name, and the registry entry when supervised."""

    ring: str
    entry: registry.StreamEntry | None = None
    endpoint: str | None = None  # ZeroMQ head updates, or the doorbell control address
    supervisor: tuple[int, float] | None = None  # (pid, start time) of who announced it


class StreamLink:
    """Registry lookup + head-update subscription for one consumer.

    Parameters
    ----------
    name : str, optional
        LSL stream name, registry key, source_id or ring name.
    source_id, type : str, optional
        Must match too (see :func:`dpshm.shm.registry.find_stream`).
    namespace : str, optional
        Supervisor namespace (default ``$DPSHM_NAMESPACE`` or ``"default"``).
    """

    _sub: HeadSubscriber | doorbell.Doorbell | None = None
    #: The doorbell this link wakes on (None: ZeroMQ or no supervisor).
    bell: doorbell.Doorbell | None = None

    def __init__(
        self,
        name: str | None,
        source_id: str | None = None,
        namespace: str | None = None,
        type: str | None = None,
    ):
        self.name = name
        self.source_id = source_id
        self.type = type
        self.namespace = namespace_from_env() if namespace is None else namespace
        self.target: Target | None = None
        self.key: str | None = None  # registry key, fixed by the first lookup
        self.attached: str | None = None  # ring the view attached (set by the view)
        self._reg_stamp: tuple[int, int] | None = None
        self._sub_endpoint: str | None = None
        self._heads: str | None = None  # ZeroMQ head updates (fallback of the doorbell)
        self._reg_path = registry.registry_path(self.namespace)
        self.next_check = 0.0  # monotonic time of the next registry check (see moved())
        self.gone_at: float | None = None  # time.time() the supervisor was seen gone
        self._sup_proc: tuple[int, float | None] | None = None  # its (pid, create time)
        self._alive_check = 0.0  # monotonic time of the next liveness check (see quiet())
        self.wake = wake_path()

    # -- lookup -------------------------------------------------------------------------
    def resolve(self) -> Target:
        """Find the ring to attach now (see the class docstring for the order).

        Raises
        ------
        StreamNotFoundError, AmbiguousStreamError
            A supervisor runs but knows no such stream (the message lists the
            known ones) or several of that name.
        NoSupervisorError
            No supervisor runs and no ring has that name.
        """
        self._reg_stamp = self._stamp()
        plain = self.source_id is None and self.type is None and self.name is not None
        try:
            reg = registry.read_registry(self.namespace)
        except SupervisorNotRunningError as exc:
            if plain and self.name in list_rings():
                return self._set(Target(self.name))
            raise NoSupervisorError(
                f"cannot open stream {self.request}: {exc} (No shared-memory ring of that name "
                f"exists either; existing rings: {list_rings()}.)"
            ) from None
        if self.key is not None:  # once found, follow that stream (not a same-named one)
            entry = reg.streams.get(self.key)
            if entry is None:
                raise StreamNotFoundError(
                    f"stream {self.request} ({self.key}) is not shared any more by the "
                    f"supervisor of namespace {self.namespace!r}"
                )
        else:
            try:
                entry = reg.find(self.name, self.source_id, self.type)
            except StreamNotFoundError:
                if plain and self.name in list_rings():
                    return self._set(Target(self.name))
                raise
            self.key = entry.key
        who = (reg.pid, reg.started)  # another: it was restarted
        self._sup_proc = (reg.pid, reg.pid_started)
        return self._set(Target(entry.ring, entry, self._endpoint(reg, entry), who))

    @property
    def request(self) -> str:
        """What was asked for, in words (for messages)."""
        return registry.describe_request(self.name, self.type, self.source_id)

    def _endpoint(self, reg: registry.Registry, entry: registry.StreamEntry) -> str | None:
        # a published stream's producer wakes its consumers itself (its own endpoints)
        eps = entry.endpoints if entry.derived else reg.endpoints
        self._heads = eps.get("heads")
        if self.wake == "doorbell" and eps.get("doorbell"):
            return eps["doorbell"]
        return self._heads

    def _set(self, target: Target) -> Target:
        self.target = target
        if target.endpoint != self._sub_endpoint:
            self._close_sub()
            if target.endpoint and target.entry is not None:
                self._sub = self._subscribe(target.endpoint, target.entry.key)
                if isinstance(self._sub, doorbell.Doorbell):
                    self.bell = self._sub
            self._sub_endpoint = target.endpoint
        return target

    def _subscribe(self, endpoint: str, key: str) -> HeadSubscriber | doorbell.Doorbell | None:
        if not endpoint.startswith(("ipc://", "tcp://")):
            try:
                return doorbell.Doorbell(endpoint, key)
            except OSError as exc:
                log.warning("no doorbell for %r (%s); waking on ZeroMQ", self.name, exc)
                if not self._heads:
                    return None
                endpoint = self._heads
        return HeadSubscriber(endpoint, [key])

    def _stamp(self) -> tuple[int, int] | None:
        return registry.file_stamp(self._reg_path)

    @property
    def supervised(self) -> bool:
        """True when a supervisor announced the attached stream."""
        return self.target is not None and self.target.entry is not None

    # -- change detection ---------------------------------------------------------------
    def moved(self, force: bool = False) -> Target | None:
        """Return the new target if the stream moved to another ring, else None.

        Cheap when nothing changed: at most one ``stat()`` per
        :data:`CHECK_EVERY_S`; ``force`` reads the registry now even if its
        file looks unchanged (a notification carried another generation).
        """
        if not self.supervised:
            return None
        now = time.monotonic()
        if not force and now < self.next_check:
            return None
        self.next_check = now + CHECK_EVERY_S
        stamp = self._stamp()
        if stamp == self._reg_stamp and not force:
            return None
        if stamp is None:  # supervisor gone: keep reading the old ring until one is back
            self._reg_stamp = None
            self._note_gone()
            return None
        old = self.target
        try:
            new = self.resolve()
        except (SupervisorNotRunningError, StreamNotFoundError, RingNotFoundError):
            self._reg_stamp = None  # try again next time
            self.target = old
            return None
        # compare with the ring the view holds: an earlier moved() may have seen the
        # move already (wait() reports it, then the view asks again to re-attach)
        current = self.attached if self.attached is not None else (old and old.ring)
        if new.ring == current:
            return None
        log.info("stream %r moved from ring %r to %r", self.name, old and old.ring, new.ring)
        return new

    def invalidate(self) -> None:
        """Make the next :meth:`moved` read the registry again."""
        self._reg_stamp = None
        self.next_check = 0.0

    # -- waiting ------------------------------------------------------------------------
    def wait(self, deadline: float, ring: SharedRing, cursor: int) -> str:
        """Block until ``ring.head > cursor`` (new rows), the stream moves, or ``deadline``.

        ``ring`` is the attached ring (its head and generation are read),
        ``deadline`` a :func:`time.monotonic` time. Returns ``"data"``,
        ``"moved"`` or ``"timeout"``. The usual doorbell wake -- one bell for the
        next write -- is one ``recv`` and one comparison here: a consumer pays
        every call of it in a process that just woke (docs/supervisor.md).
        """
        sub, bell = self._sub, self.bell
        generation = ring.generation
        while True:
            remaining = deadline - time.monotonic()
            if sub is None:
                if ring.head > cursor:
                    return "data"
                if remaining <= 0:
                    return "timeout"
                time.sleep(min(POLL_FALLBACK_S, remaining))
                continue
            wait_s = remaining if remaining < CHECK_EVERY_S else CHECK_EVERY_S
            gen = bell.wait(wait_s) if bell is not None else self._zmq_wake(sub, wait_s)
            if gen is None:  # quiet: look at the registry, the head, re-subscribe
                if self.quiet():
                    return "moved"
                if ring.head > cursor:
                    return "data"
                if time.monotonic() >= deadline:
                    return "timeout"
                continue
            if gen != generation:
                return "moved"
            if ring.head > cursor:
                return "data"
            if bell is not None:  # bells queued while the reader was busy: drop them
                gen = bell.drain()
                if gen is not None and gen != generation:
                    return "moved"

    def _note_gone(self) -> None:
        """The supervisor stopped or died: say so once (until the view re-attaches)."""
        if self.gone_at is not None:
            return
        self.gone_at = time.time()
        log.warning(
            "the supervisor of namespace %r is gone: stream %s keeps its last ring and "
            "re-attaches when a supervisor is back; what the outlet sends meanwhile is not "
            "captured (the view's gaps and lost_samples say it)",
            self.namespace, self.request,
        )  # fmt: skip

    def quiet(self) -> bool:
        """No wake-up came for a while.

        True if the stream moved (a new generation that sends nothing yet, a restarted
        supervisor); re-sends the doorbell subscription (the supervisor ignores
        duplicates). A supervisor killed without removing its registry is noticed here
        (its process is gone).
        """
        if self.moved() is not None:
            return True
        now = time.monotonic()
        if self.gone_at is None and self._sup_proc is not None and now >= self._alive_check:
            self._alive_check = now + ALIVE_EVERY_S
            if not pid_alive(*self._sup_proc):
                self._note_gone()
        if self.bell is not None:
            self.bell.subscribe()
        return False

    @staticmethod
    def _zmq_wake(sub: HeadSubscriber, timeout: float) -> int | None:
        """Wait for ZeroMQ head updates; the newest generation announced, or None."""
        updates = sub.wait(timeout)
        return next(iter(updates.values())).generation if updates else None

    # -- lifetime -----------------------------------------------------------------------
    def _close_sub(self) -> None:
        sub, self._sub = self._sub, None
        self.bell = None
        if sub is not None:
            sub.close()

    def close(self) -> None:
        """Close the subscription (idempotent)."""
        self._close_sub()
        self._sub_endpoint = None
