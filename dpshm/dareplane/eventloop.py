"""A fixed-period event loop for Dareplane modules: :class:`EventLoop`.

Compatible with ``dareplane_utils.general.event_loop.EventLoop`` (same
constructor, ``add_*`` methods, ``run()``, ``stop_event``, ``ctx``), with the
defects of the original fixed:

- Ticks are scheduled on absolute deadlines ``start + k * dt_s`` of
  :func:`time.perf_counter`, so the period does not drift by the callbacks'
  run time (the original sleeps ``dt_s`` *after* the callbacks).
- Overruns are counted (:attr:`EventLoop.overruns`, :attr:`EventLoop.missed_ticks`).
  Policy after an overrun: the overdue tick runs at once, any further ticks that
  are already in the past are dropped, and the schedule stays on the original
  grid. Catching up would run the callbacks back to back on the same, stale data
  and burst their outputs (e.g. stimulation commands) into the next period; a
  closed loop wants one fresh evaluation as soon as possible and then its
  regular rhythm.
- A callback that raises is logged and the loop continues (``on_error="log"``)
  or the loop stops and re-raises (``on_error="raise"``).
- Invalid callbacks are rejected with a ``TypeError`` when added, not when run.
- Delayed callbacks count their delay from when they are added.
- :meth:`EventLoop.start` runs the loop in a background thread and
  :meth:`EventLoop.stop` ends it with a bounded wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dpshm._logging import library_logger
from dpshm.dareplane._callbacks import as_ctx_callback, callback_name
from dpshm.dareplane.timing import _check_spin, _sleep_until, check_seconds
from dpshm.errors import DpshmTimeoutError

logger = library_logger(__name__)

__all__ = ["DelayedCallback", "EventLoop"]

_ON_ERROR = ("log", "raise")
#: a periodic callback that keeps failing is reported at most this often (s)
_ERROR_REPORT_INTERVAL_S = 1.0

_perf_counter = time.perf_counter


@dataclass
class DelayedCallback:
    """A one-time callback due ``delay_s`` seconds after ``start_ts``.

    Attributes
    ----------
    cb : Callable
        The (validated) callback, called with ``ctx=...``.
    delay_s : float
        Delay in seconds relative to ``start_ts``.
    start_ts : float
        :func:`time.perf_counter` time the delay counts from; defaults to the
        moment the object is created (the original evaluated it once at import).
    """

    cb: Callable[..., Any]
    delay_s: float
    start_ts: float = field(default_factory=time.perf_counter)

    @property
    def due_ts(self) -> float:
        """:func:`time.perf_counter` time at or after which the callback runs."""
        return self.start_ts + self.delay_s


class EventLoop:
    """Call callbacks every ``dt_s`` seconds on a drift-free schedule.

    Periodic callbacks run every tick; one-time callbacks run at the next tick;
    delayed one-time callbacks run at the first tick at or after their due time.
    Within a tick the order is: one-time callbacks (FIFO, including ones added
    by callbacks of this tick), due delayed callbacks (by due time, then in the
    order added), periodic callbacks (in the order added). The first tick runs
    as soon as :meth:`run` starts; tick ``k`` is due at ``start + k * dt_s``.

    Callbacks take the loop's context as a parameter named ``ctx``; a callback
    with no ``ctx`` parameter and no required arguments is called without it.
    Callbacks may be added from any thread, also while the loop runs.

    Parameters
    ----------
    dt_s : float
        Period in seconds (> 0).
    stop_event : threading.Event or None, optional
        Event that ends the loop when set; a new one is created if ``None``.
    ctx : Any, optional
        Object passed as ``ctx=`` to every callback (read at each call, so it
        may be replaced while the loop runs).
    on_error : {"log", "raise"}, optional
        What a callback raising an ``Exception`` does: ``"log"`` (default) logs
        it with its traceback (a periodic callback that keeps failing at most
        once per second) and the loop carries on; ``"raise"`` ends the loop and
        re-raises from :meth:`run` (in a :meth:`start` thread it is logged and
        kept in :attr:`exception`).
    spin_s : float or None, optional
        Fixed spin margin of the sleeps between ticks, see
        :func:`dpshm.dareplane.timing.sleep_s`; ``None`` (default) learns it.
    name : str, optional
        Name of the thread :meth:`start` creates, also used in log messages.

    Attributes
    ----------
    dt_s, stop_event, ctx
        As passed (``stop_event`` created if not passed).
    callbacks, callbacks_once, delayed_callbacks_once : list
        The registered callbacks (use the ``add_*`` methods to change them).
    now : float
        :func:`time.perf_counter` time at which the current tick started.
    last_run_ts : float
        Same as ``now`` (name kept from the original).
    deadline : float
        Scheduled time of the current tick (``now - deadline`` is its lateness).
    ticks : int
        Ticks run so far.
    overruns : int
        Ticks whose callbacks ended after the next tick's deadline.
    missed_ticks : int
        Ticks dropped because they were already in the past (after an overrun
        or a late wake-up), see the module docstring for the policy.
    callback_errors : int
        Exceptions raised by callbacks so far.
    exception : BaseException or None
        The exception that ended a :meth:`start` thread, if any.

    Examples
    --------
    >>> loop = EventLoop(dt_s=0.01, ctx={"n": 0})
    >>> loop.add_callback(lambda ctx: ctx.__setitem__("n", ctx["n"] + 1))
    >>> loop.add_delayed_callback_once(lambda: loop.stop_event.set(), dt=0.1)
    >>> loop.run()  # returns after ~0.1 s, ctx["n"] is ~11
    """

    def __init__(
        self,
        dt_s: float,
        stop_event: threading.Event | None = None,
        ctx: Any | None = None,
        *,
        on_error: str = "log",
        spin_s: float | None = None,
        name: str = "dpshm-eventloop",
    ) -> None:
        self.dt_s = check_seconds("dt_s", dt_s, positive=True, hint="e.g. dt_s=0.001 for 1 kHz")
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
        _check_spin(spin_s)
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.ctx = ctx
        self.on_error = on_error
        self.spin_s = spin_s
        self.name = name
        self.callbacks: list[Callable[..., Any]] = []
        self.callbacks_once: list[Callable[..., Any]] = []
        self.delayed_callbacks_once: list[DelayedCallback] = []
        self.now = 0.0
        self.last_run_ts = _perf_counter()
        self.deadline = 0.0
        self.ticks = 0
        self.overruns = 0
        self.missed_ticks = 0
        self.callback_errors = 0
        self.exception: BaseException | None = None
        self._lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None
        self._error_reports: dict[int, list[float]] = {}

    # ------------------------------------------------------------------ adding
    def validate_callback(self, cb: Any) -> Callable[..., Any]:
        """Return ``cb`` callable as ``cb(ctx=...)``, or raise ``TypeError``.

        See :func:`dpshm.dareplane._callbacks.as_ctx_callback` for the accepted signatures.
        """
        return as_ctx_callback(cb, owner="EventLoop")

    def _add(self, target: list[Callable[..., Any]], cbs: Iterable[Callable[..., Any]]) -> None:
        """Validate every callback of ``cbs`` first, then append them all to ``target``."""
        valid = [self.validate_callback(cb) for cb in cbs]
        with self._lock:
            target.extend(valid)

    def add_callback(self, cb: Callable[..., Any]) -> None:
        """Add a callback that runs every tick.

        Parameters
        ----------
        cb : Callable
            See :meth:`validate_callback`.
        """
        self._add(self.callbacks, (cb,))

    def add_callbacks(self, cbs: Iterable[Callable[..., Any]]) -> None:
        """Add several periodic callbacks; all are validated before any is added.

        Parameters
        ----------
        cbs : iterable of Callable
            See :meth:`validate_callback`.
        """
        self._add(self.callbacks, cbs)

    def add_callback_once(self, cb: Callable[..., Any]) -> None:
        """Add a callback that runs once, at the next tick.

        Parameters
        ----------
        cb : Callable
            See :meth:`validate_callback`.
        """
        self._add(self.callbacks_once, (cb,))

    def add_callbacks_once(self, cbs: Iterable[Callable[..., Any]]) -> None:
        """Add several one-time callbacks; all are validated before any is added.

        Parameters
        ----------
        cbs : iterable of Callable
            See :meth:`validate_callback`.
        """
        self._add(self.callbacks_once, cbs)

    def add_delayed_callback_once(self, cb: Callable[..., Any], dt: float = 0.0) -> None:
        """Add a callback that runs once, at the first tick ``dt`` s after now.

        Parameters
        ----------
        cb : Callable
            See :meth:`validate_callback`.
        dt : float, optional
            Delay in seconds (>= 0) counted from this call; default 0.
        """
        dt = check_seconds("dt", dt, positive=False, hint="pass the delay in seconds")
        dcb = DelayedCallback(self.validate_callback(cb), dt, _perf_counter())
        with self._lock:
            self.delayed_callbacks_once.append(dcb)

    # ----------------------------------------------------------------- running
    def run(self) -> None:
        """Run ticks until :attr:`stop_event` is set; blocks the calling thread.

        Raises
        ------
        RuntimeError
            If the loop already runs (in another thread or via :meth:`start`).
        Exception
            Whatever a callback raised, if ``on_error="raise"``.
        """
        self._claim()
        try:
            self._run()
        finally:
            self._running = False

    def _claim(self) -> None:
        with self._lock:
            if self._running:
                raise RuntimeError(f"EventLoop {self.name!r} is already running; call stop() first")
            self._running = True

    def _run(self) -> None:
        dt = self.dt_s
        stop = self.stop_event
        spin_s = self.spin_s
        t0 = _perf_counter()
        k = 0
        while not stop.is_set():
            now = _perf_counter()
            late = now - (t0 + k * dt)
            if late >= dt:  # woke more than a period late: drop the ticks in the past
                skipped = int(late // dt)
                k += skipped
                self.missed_ticks += skipped
            self.deadline = t0 + k * dt
            self.now = self.last_run_ts = now
            self.process_callbacks()
            self.ticks += 1
            k += 1
            next_deadline = t0 + k * dt
            if _perf_counter() >= next_deadline:
                self.overruns += 1
            else:
                _sleep_until(next_deadline, spin_s, stop)

    def process_callbacks(self) -> None:
        """Run one tick's callbacks now (one-time, due delayed, periodic)."""
        lock = self._lock
        once = self.callbacks_once
        while once:
            with lock:
                if not once:
                    break
                cb = once.pop(0)
            self._call(cb, periodic=False)
        if self.delayed_callbacks_once:
            now = self.now
            with lock:
                due = [d for d in self.delayed_callbacks_once if d.due_ts <= now]
                if due:
                    self.delayed_callbacks_once = [
                        d for d in self.delayed_callbacks_once if d.due_ts > now
                    ]
            due.sort(key=lambda d: d.due_ts)
            for d in due:
                self._call(d.cb, periodic=False)
        for cb in tuple(self.callbacks):
            self._call(cb, periodic=True)

    def _call(self, cb: Callable[..., Any], *, periodic: bool) -> None:
        try:
            cb(ctx=self.ctx)
        except Exception as exc:
            self.callback_errors += 1
            if self.on_error == "raise":
                raise
            self._report(cb, exc, periodic)

    def _report(self, cb: Callable[..., Any], exc: Exception, periodic: bool) -> None:
        name = callback_name(cb)
        if not periodic:
            logger.error(
                "EventLoop %r: callback %s raised %r; the loop continues (on_error='log')",
                self.name,
                name,
                exc,
                exc_info=exc,
            )
            return
        now = _perf_counter()
        rep = self._error_reports.get(id(cb))
        if rep is None:
            self._error_reports[id(cb)] = [now, 0]
            logger.error(
                "EventLoop %r: periodic callback %s raised %r; the loop continues "
                "(on_error='log'), repeats are reported at most once per second",
                self.name,
                name,
                exc,
                exc_info=exc,
            )
        elif now - rep[0] >= _ERROR_REPORT_INTERVAL_S:
            logger.error(
                "EventLoop %r: periodic callback %s raised %r again (%d times since the last "
                "report)",
                self.name,
                name,
                exc,
                int(rep[1]) + 1,
            )
            rep[0], rep[1] = now, 0
        else:
            rep[1] += 1

    # --------------------------------------------------------------- threading
    @property
    def is_running(self) -> bool:
        """``True`` while :meth:`run` executes (in any thread)."""
        return self._running

    def start(self, daemon: bool = True) -> threading.Thread:
        """Run the loop in a new background thread and return the thread.

        The loop ends when :attr:`stop_event` is set (it is not cleared here: if
        it is already set, the thread ends at once). End it with :meth:`stop`.

        Parameters
        ----------
        daemon : bool, optional
            Make the thread a daemon (default), so a forgotten loop does not
            keep the interpreter alive.

        Returns
        -------
        threading.Thread
            The started thread.

        Raises
        ------
        RuntimeError
            If the loop already runs.
        """
        self._claim()
        self.exception = None
        thread = threading.Thread(target=self._thread_main, name=self.name, daemon=daemon)
        self._thread = thread
        try:
            thread.start()
        except BaseException:
            self._running = False
            raise
        return thread

    def _thread_main(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.exception = exc
            logger.error("EventLoop %r stopped by %r", self.name, exc, exc_info=exc)
        finally:
            self._running = False

    def stop(self, timeout: float = 1.0) -> None:
        """Set :attr:`stop_event` and wait for the :meth:`start` thread to end.

        Safe to call repeatedly, from a callback (it then only sets the event),
        and when the loop was never started.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the running tick to finish; default 1.

        Raises
        ------
        dpshm.errors.DpshmTimeoutError
            If the thread is still running after ``timeout`` (a callback blocks).
        ValueError, TypeError
            ``timeout`` is not a finite number of seconds >= 0.
        """
        timeout = check_seconds("timeout", timeout, hint="e.g. stop(timeout=2.0)")
        self.stop_event.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            raise DpshmTimeoutError(
                f"EventLoop thread {self.name!r} did not stop within {timeout} s: a callback "
                "is still running; make callbacks return within a period or call "
                "stop() with a longer timeout"
            )
        self._thread = None

    def close(self) -> None:
        """Stop the loop (see :meth:`stop`); idempotent."""
        self.stop()

    def __enter__(self) -> EventLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (
            f"<EventLoop {self.name!r} dt_s={self.dt_s} {state} ticks={self.ticks} "
            f"overruns={self.overruns} missed_ticks={self.missed_ticks}>"
        )
