"""Precise sleeping: :func:`sleep_s` and :func:`sleep_until`.

A sleep is split in two phases. The *coarse* phase hands the CPU back to the
OS with :func:`time.sleep`, asking to be woken ``margin`` seconds before the
deadline; the *spin* phase busy-waits on :func:`time.perf_counter` for the rest.
The OS wakes a sleeping thread late by a variable amount (on the 2-core VMs this
package is developed on: ~80-120 µs for 1 ms sleeps, ~200 µs for 10 ms sleeps,
with a tail to ~0.5 ms). A fixed margin either wastes CPU (too wide) or misses
the deadline (too narrow), so the margin is learned: every coarse sleep reports
how late it woke, and a streaming estimate of a high quantile of that lateness
(per range of sleep durations, because longer sleeps wake later) becomes the
next margin. The spin then lasts only ``margin - lateness``, typically a few
tens of microseconds, instead of the fixed 10 % of every sleep that
``dareplane_utils.general.time.sleep_s`` busy-waits.

Knobs (see ``docs/timing.md``):

- ``spin_s`` (per call): a fixed spin margin in seconds instead of the learned
  one; ``0`` never spins (cheapest, wakes as late as the OS wakes it).
- :func:`set_spin_quantile` (process-wide): the fraction of sleeps that should
  wake before the deadline and spin. Higher is more accurate and costs more CPU.

:class:`~dpshm.dareplane.eventloop.EventLoop` paces its
periods with :func:`sleep_until`.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

__all__ = [
    "get_spin_margin",
    "set_spin_quantile",
    "sleep_s",
    "sleep_until",
]

_perf_counter = time.perf_counter
_sleep = time.sleep

#: default fraction of coarse sleeps that wake before the deadline (and spin)
DEFAULT_SPIN_QUANTILE = 0.95
#: the learned margin stays inside these bounds (seconds)
MIN_SPIN_S = 10e-6
MAX_SPIN_S = 1e-3
#: ... and spins at most this fraction of the sleep, so that a burst of late
#: wake-ups on a loaded machine cannot turn sleeping into spinning
MAX_SPIN_FRACTION = 0.25
#: learned margin before any observation (seconds); adapts within tens of sleeps
_INITIAL_SPIN_S = 200e-6
#: relative step of the quantile estimate per observation
_LEARNING_RATE = 0.1
#: coarse waits longer than this wait on the stop event (if any), so that a stop
#: request ends them early; shorter ones use time.sleep
_EVENT_WAIT_MIN_S = 0.05
#: duration buckets: [0, 0.35 ms), [0.35, 0.7 ms), [0.7, 1.4 ms), ..., [45 ms, inf); common
#: periods (1, 2, 5, 10, 20 ms) sit inside a bucket, not on a boundary
_BUCKET_BASE_S = 350e-6
_N_BUCKETS = 9


class _LatenessEstimator:
    """Streaming quantile of how late ``time.sleep`` wakes, per duration bucket.

    Stochastic-approximation quantile tracking: after each observation the
    estimate moves up by ``rate * q`` if the sleep woke later than the estimate,
    and down by ``rate * (1 - q)`` otherwise, where ``rate`` is proportional to
    the estimate. It settles where a fraction ``q`` of observations lie below it
    and a single outlier moves it by at most one step. Updates race benignly
    between threads (plain float stores under the GIL).
    """

    def __init__(self, quantile: float = DEFAULT_SPIN_QUANTILE) -> None:
        self.quantile = quantile
        self.margins = [_INITIAL_SPIN_S] * _N_BUCKETS

    @staticmethod
    def bucket(duration: float) -> int:
        if duration < _BUCKET_BASE_S:
            return 0
        return min(_N_BUCKETS - 1, int(math.log2(duration / _BUCKET_BASE_S)) + 1)

    def observe(self, bucket: int, lateness: float) -> None:
        m = self.margins[bucket]
        step = _LEARNING_RATE * m
        m = m + step * self.quantile if lateness > m else m - step * (1.0 - self.quantile)
        self.margins[bucket] = min(MAX_SPIN_S, max(MIN_SPIN_S, m))


_ESTIMATOR = _LatenessEstimator()


def set_spin_quantile(quantile: float) -> None:
    """Set the fraction of coarse sleeps that should wake before their deadline.

    The learned spin margin tracks this quantile of the OS's wake-up lateness.
    ``0.95`` (the default) keeps the mean overshoot of :func:`sleep_s` at a few
    microseconds; ``0.5`` halves the spinning but lets half of the sleeps end late
    by the OS's jitter; ``0.99`` spins longer to cut the tail. Process-wide.

    Parameters
    ----------
    quantile : float
        A number in ``[0.5, 0.999]``.

    Raises
    ------
    ValueError
        If ``quantile`` is outside ``[0.5, 0.999]``.
    """
    q = float(quantile)
    if not 0.5 <= q <= 0.999:
        raise ValueError(
            f"spin quantile must be in [0.5, 0.999], got {quantile!r}; "
            f"use {DEFAULT_SPIN_QUANTILE} (the default) unless you measured otherwise"
        )
    _ESTIMATOR.quantile = q


def get_spin_margin(duration: float) -> float:
    """Return the learned spin margin (seconds) for a sleep of ``duration``.

    Parameters
    ----------
    duration : float
        Length in seconds of the sleep the margin applies to.

    Returns
    -------
    float
        Seconds that :func:`sleep_s` currently spins before a deadline, at most.
    """
    return _ESTIMATOR.margins[_LatenessEstimator.bucket(duration)]


def _check_spin(spin_s: float | None) -> None:
    if spin_s is not None and not (spin_s >= 0.0 and math.isfinite(spin_s)):
        raise ValueError(
            f"spin_s must be None (learned margin) or a finite number of seconds >= 0, "
            f"got {spin_s!r}"
        )


def sleep_until(
    deadline: float,
    *,
    spin_s: float | None = None,
    stop_event: Any | None = None,
) -> bool:
    """Sleep until ``time.perf_counter()`` reaches ``deadline``.

    Coarse ``time.sleep`` until ``margin`` before the deadline, then spin; see
    the module docstring for how the margin is learned.

    Parameters
    ----------
    deadline : float
        Absolute time on the :func:`time.perf_counter` clock. A deadline in the
        past returns at once.
    spin_s : float or None, optional
        Fixed spin margin in seconds; ``None`` (default) uses the learned margin,
        ``0`` never spins.
    stop_event : threading.Event or None, optional
        If given, coarse waits longer than 50 ms wait on this event instead, and
        the sleep ends early (returning ``False``) once it is set.

    Returns
    -------
    bool
        ``True`` once the deadline is reached, ``False`` if ``stop_event`` ended
        the sleep early.

    Raises
    ------
    ValueError
        If ``spin_s`` is negative or not finite.
    """
    _check_spin(spin_s)
    return _sleep_until(deadline, spin_s, stop_event)


def _sleep_until(deadline: float, spin_s: float | None, stop_event: Any | None) -> bool:
    # unchecked fast path shared by sleep_s and the EventLoop
    now = _perf_counter()
    remaining = deadline - now
    while remaining > 0.0:
        if spin_s is None:
            bucket = _LatenessEstimator.bucket(remaining)
            margin = min(_ESTIMATOR.margins[bucket], MAX_SPIN_FRACTION * remaining)
        else:
            margin = spin_s
        coarse = remaining - margin
        if coarse <= 0.0:
            break
        if stop_event is not None and coarse > _EVENT_WAIT_MIN_S:
            if stop_event.wait(coarse):
                return False
        else:
            _sleep(coarse)
        now = _perf_counter()
        if spin_s is None:
            _ESTIMATOR.observe(bucket, now - (deadline - margin))
        remaining = deadline - now
        if remaining <= margin:
            break  # woke inside the spin window (or late): no second coarse sleep
    while _perf_counter() < deadline:
        pass
    return True


def sleep_s(
    s: float,
    partial_sleep_threshold: float = 0.0005,
    nsteps: int | None = None,
    *,
    spin_s: float | None = None,
) -> None:
    """Sleep ``s`` seconds with sub-millisecond accuracy at little CPU cost.

    Drop-in replacement for ``dareplane_utils.general.time.sleep_s``: sleeps
    with :func:`time.sleep` until a learned margin before the end, then spins
    (see the module docstring). Never returns before ``s`` has passed.

    Parameters
    ----------
    s : float
        Seconds to sleep. Zero or negative returns at once (as the original).
    partial_sleep_threshold : float, optional
        Sleeps shorter than this (seconds) spin all the way, as in the original;
        default 0.5 ms.
    nsteps : int or None, optional
        Accepted for compatibility with the original (its number of coarse sleep
        steps) and ignored: the coarse phase here is a single sleep. Passing it
        emits a ``DeprecationWarning``.
    spin_s : float or None, optional
        Fixed spin margin in seconds instead of the learned one; ``0`` never spins.

    Raises
    ------
    ValueError
        If ``s`` is NaN or infinite, or ``spin_s`` is negative or not finite.
    TypeError
        If ``s`` is not a number.

    Examples
    --------
    >>> sleep_s(0.002)  # returns 2 ms later, typically within a few µs
    """
    try:
        finite = math.isfinite(s)
    except TypeError:
        raise TypeError(f"sleep_s needs a number of seconds, got {s!r:.60}") from None
    if not finite:
        raise ValueError(f"sleep_s got s={s!r}; pass a finite number of seconds")
    if nsteps is not None:
        warnings.warn(
            "sleep_s(nsteps=...) is ignored by dpshm (one coarse sleep, then a learned "
            "spin); drop the argument, or pass spin_s=... to fix the spin margin",
            DeprecationWarning,
            stacklevel=2,
        )
    _check_spin(spin_s)
    if s <= 0.0:
        return
    deadline = _perf_counter() + s
    if s < partial_sleep_threshold:
        while _perf_counter() < deadline:
            pass
        return
    _sleep_until(deadline, spin_s, None)
