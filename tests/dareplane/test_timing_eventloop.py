"""Tests of dpshm.dareplane.eventloop.EventLoop ."""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

import pytest
from helpers import import_original, wait_until

from dpshm.dareplane.eventloop import EventLoop
from dpshm.errors import DpshmTimeoutError


def _stop_after(loop: EventLoop, n: int) -> None:
    """Add a periodic callback that stops ``loop`` after ``n`` ticks."""

    def stopper(ctx: Any) -> None:
        if loop.ticks + 1 >= n:
            loop.stop_event.set()

    loop.add_callback(stopper)


# ---------------------------------------------------------------- ordering
def test_order_of_once_delayed_and_periodic_callbacks() -> None:
    log: list[tuple[str, int, float]] = []
    loop = EventLoop(0.005, ctx=log)

    def rec(tag: str):
        def cb(ctx: list) -> None:
            ctx.append((tag, loop.ticks, time.perf_counter()))

        return cb

    def once1(ctx: list) -> None:
        rec("once1")(ctx)
        loop.add_callback_once(rec("once3"))  # added during the tick: runs in the same tick

    loop.add_callback(rec("periodic"))
    loop.add_callbacks_once([once1, rec("once2")])
    t_added = time.perf_counter()
    loop.add_delayed_callback_once(rec("late"), dt=0.04)
    loop.add_delayed_callback_once(rec("early"), dt=0.02)
    loop.add_delayed_callback_once(rec("now"), dt=0.0)
    loop.add_delayed_callback_once(lambda: loop.stop_event.set(), dt=0.06)
    loop.run()

    tags = [t for t, _, _ in log]
    assert tags[:5] == ["once1", "once2", "once3", "now", "periodic"]
    assert all(k == 0 for _, k, _ in log[:5])
    for once in ("once1", "once2", "once3", "now", "early", "late"):
        assert tags.count(once) == 1
    assert tags.index("early") < tags.index("late")
    t_of = {t: ts for t, _, ts in log}
    assert t_of["early"] - t_added >= 0.02
    assert t_of["late"] - t_added >= 0.04
    # a delayed callback runs before the periodic ones of its tick
    i = tags.index("early")
    assert tags[i + 1] == "periodic"
    assert log[i][1] == log[i + 1][1]
    assert tags.count("periodic") == loop.ticks
    assert loop.delayed_callbacks_once == [] and loop.callbacks_once == []


def test_callbacks_with_and_without_ctx() -> None:
    got: dict[str, Any] = {}
    ctx = object()

    class Obj:
        def method(self, ctx: Any) -> None:
            got["method"] = ctx

        def __call__(self) -> None:
            got["call"] = True

    def kwonly(*, ctx: Any) -> None:
        got["kwonly"] = ctx

    def posonly(ctx: Any, /) -> None:
        got["posonly"] = ctx

    def extra_defaults(a: int = 1, ctx: Any = None, b: int = 2) -> None:
        got["defaults"] = (a, ctx, b)

    def two(a: int, ctx: Any) -> None:
        got["partial"] = (a, ctx)

    loop = EventLoop(0.002, ctx=ctx)
    loop.add_callbacks_once(
        [
            lambda: got.setdefault("noarg", True),
            lambda ctx: got.setdefault("lambda", ctx),
            Obj().method,
            Obj(),
            kwonly,
            posonly,
            extra_defaults,
            functools.partial(two, 5),
            lambda **kw: got.setdefault("kwargs", kw),  # no named ctx: called without it
        ]
    )
    loop.add_callback_once(lambda: loop.stop_event.set())
    loop.run()
    assert got == {
        "noarg": True,
        "lambda": ctx,
        "method": ctx,
        "call": True,
        "kwonly": ctx,
        "posonly": ctx,
        "defaults": (1, ctx, 2),
        "partial": (5, ctx),
        "kwargs": {},
    }


# ----------------------------------------------------------------- bad input
def _needs_x(x: int) -> None: ...


async def _coro(ctx: Any) -> None: ...


@pytest.mark.parametrize(
    ("cb", "match"),
    [
        (42, "must be callable, got 42"),
        ("print", "must be callable"),
        (_needs_x, r"_needs_x\(x: .*cannot be called as cb\(ctx=\.\.\.\) nor as cb\(\)"),
        (lambda ctx, y: None, "rename the parameter to `ctx`"),
        (_coro, "coroutine function"),
    ],
)
def test_invalid_callbacks_rejected_at_add_time(cb: Any, match: str) -> None:
    loop = EventLoop(0.01)
    for add in (loop.add_callback, loop.add_callback_once):
        with pytest.raises(TypeError, match=match):
            add(cb)
    with pytest.raises(TypeError, match=match):
        loop.add_delayed_callback_once(cb, dt=0.1)
    with pytest.raises(TypeError, match=match):
        loop.add_callbacks([lambda: None, cb])
    with pytest.raises(TypeError, match=match):
        loop.add_callbacks_once([lambda: None, cb])
    # nothing was added by the failed batch calls
    assert loop.callbacks == [] and loop.callbacks_once == []
    assert loop.delayed_callbacks_once == []


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"dt_s": 0}, ValueError, "dt_s must be a finite number of seconds > 0, got 0"),
        ({"dt_s": -0.001}, ValueError, "dt_s must be"),
        ({"dt_s": float("nan")}, ValueError, "dt_s must be"),
        ({"dt_s": "0.01"}, TypeError, "dt_s must be a number of seconds, got '0.01'"),
        ({"dt_s": 0.01, "on_error": "ignore"}, ValueError, "on_error must be one of"),
        ({"dt_s": 0.01, "spin_s": -1}, ValueError, "spin_s must be"),
    ],
)
def test_invalid_constructor_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        EventLoop(**kwargs)


def test_invalid_delay() -> None:
    loop = EventLoop(0.01)
    with pytest.raises(ValueError, match="dt must be a finite number of seconds >= 0, got -1"):
        loop.add_delayed_callback_once(lambda: None, dt=-1)


# ------------------------------------------------------------ raising callbacks
def test_raising_callback_is_logged_and_loop_continues(caplog: pytest.LogCaptureFixture) -> None:
    calls = {"bad": 0, "good": 0}

    def bad(ctx: Any) -> None:
        calls["bad"] += 1
        raise ValueError("boom")

    def good(ctx: Any) -> None:
        calls["good"] += 1

    loop = EventLoop(0.002)
    loop.add_callback(bad)
    loop.add_callback(good)
    loop.add_callback_once(lambda: 1 / 0)
    _stop_after(loop, 20)
    with caplog.at_level(logging.ERROR, logger="dpshm.dareplane.eventloop"):
        loop.run()
    assert calls == {"bad": 20, "good": 20}
    assert loop.callback_errors == 21
    records = [r for r in caplog.records if r.name == "dpshm.dareplane.eventloop"]
    # one report for the one-time callback; the periodic one's 20 failures are
    # rate-limited to one report per second (20 ticks of 2 ms: one, maybe two)
    assert "ZeroDivisionError" in records[0].getMessage()
    periodic = records[1:]
    assert 1 <= len(periodic) <= 2
    assert "bad" in periodic[0].getMessage() and "boom" in periodic[0].getMessage()
    assert periodic[0].exc_info is not None and periodic[0].exc_info[0] is ValueError


def test_on_error_raise_stops_and_reraises() -> None:
    loop = EventLoop(0.002, on_error="raise")

    def bad(ctx: Any) -> None:
        if loop.ticks == 3:
            raise KeyError("stop here")

    loop.add_callback(bad)
    with pytest.raises(KeyError, match="stop here"):
        loop.run()
    assert not loop.is_running
    assert loop.callback_errors == 1
    assert loop.ticks == 3


def test_on_error_raise_in_thread_keeps_exception(caplog: pytest.LogCaptureFixture) -> None:
    loop = EventLoop(0.002, on_error="raise")

    def bad(ctx: Any) -> None:
        raise RuntimeError("worker failed")

    loop.add_callback(bad)
    with caplog.at_level(logging.ERROR, logger="dpshm.dareplane.eventloop"):
        thread = loop.start()
        thread.join(5)
    assert not thread.is_alive()
    assert isinstance(loop.exception, RuntimeError)
    assert any("worker failed" in r.getMessage() for r in caplog.records)
    loop.stop()  # nothing left to wait for


# --------------------------------------------------------------- threading
def test_stop_from_another_thread_while_run_blocks() -> None:
    loop = EventLoop(0.002)
    done = threading.Event()

    def runner() -> None:
        loop.run()
        done.set()

    t = threading.Thread(target=runner)
    t.start()
    try:
        wait_until(lambda: loop.ticks >= 5, timeout=5)
        loop.stop_event.set()
        assert done.wait(5)
    finally:
        loop.stop_event.set()
        t.join(5)
    assert not loop.is_running


def test_start_stop_background_thread() -> None:
    loop = EventLoop(0.002)
    thread = loop.start()
    try:
        assert thread.daemon and thread.name == "dpshm-eventloop"
        wait_until(lambda: loop.ticks >= 5, timeout=5)
        with pytest.raises(RuntimeError, match="already running"):
            loop.start()
        with pytest.raises(RuntimeError, match="already running"):
            loop.run()
    finally:
        loop.stop(timeout=5)
    assert not thread.is_alive() and not loop.is_running
    loop.stop()  # idempotent
    loop.close()


def test_stop_interrupts_a_long_period() -> None:
    # with dt_s = 30 s the loop sleeps on its stop event, so stop() ends it at once
    loop = EventLoop(30.0)
    loop.start()
    wait_until(lambda: loop.ticks >= 1, timeout=5)
    loop.stop(timeout=5)
    assert not loop.is_running


def test_stop_times_out_when_a_callback_blocks() -> None:
    release = threading.Event()
    entered = threading.Event()

    def blocking(ctx: Any) -> None:
        entered.set()
        release.wait(10)

    loop = EventLoop(0.002)
    loop.add_callback(blocking)
    loop.start()
    try:
        assert entered.wait(5)
        with pytest.raises(DpshmTimeoutError, match=r"did not stop within 0\.05 s"):
            loop.stop(timeout=0.05)
        assert loop.is_running
    finally:
        release.set()
        loop.stop(timeout=5)
    assert not loop.is_running


def test_stop_from_inside_a_callback_and_context_manager() -> None:
    with EventLoop(0.002) as loop:
        loop.add_callback(lambda: loop.stop() if loop.ticks >= 3 else None)
        thread = loop.start()
        thread.join(5)
        assert not thread.is_alive()
    assert loop.ticks == 4
    with EventLoop(0.002) as loop2:
        loop2.start()
        wait_until(lambda: loop2.ticks >= 2, timeout=5)
    assert not loop2.is_running


# ------------------------------------------------------------------ schedule
def _run_drift_probe(loop_cls: type, dt: float, work: float, n: int) -> tuple[list[float], Any]:
    """Run ``n`` ticks of a callback that busy-works ``work`` s; return tick times."""
    stamps: list[float] = []
    loop = loop_cls(dt)

    def cb(ctx: Any) -> None:
        t = time.perf_counter()
        stamps.append(t)
        end = t + work
        while time.perf_counter() < end:
            pass
        if len(stamps) >= n:
            loop.stop_event.set()

    loop.add_callback(cb)
    loop.run()
    return stamps, loop


DRIFT_DT, DRIFT_WORK, DRIFT_N = 0.004, 0.002, 150
#: one tick may be late by this much on a loaded machine; drift would accumulate
#: 150 * 2 ms = 300 ms of callback time
DRIFT_TOLERANCE_S = 0.08


def test_no_drift_over_many_periods() -> None:
    stamps, loop = _run_drift_probe(EventLoop, DRIFT_DT, DRIFT_WORK, DRIFT_N)
    periods = loop.ticks - 1 + loop.missed_ticks  # grid periods between first and last tick
    assert loop.ticks == DRIFT_N
    elapsed = stamps[-1] - stamps[0]
    assert abs(elapsed - periods * DRIFT_DT) < DRIFT_TOLERANCE_S
    # every tick ran on the grid, never early
    assert loop.now >= loop.deadline


@pytest.mark.interop
def test_drift_probe_detects_the_original_drift() -> None:
    """The same criterion fails for dareplane-utils' EventLoop, which sleeps dt after
    its callbacks: the probe above can fail."""
    OrigEventLoop = import_original("dareplane_utils.general.event_loop").EventLoop

    stamps, _ = _run_drift_probe(OrigEventLoop, DRIFT_DT, DRIFT_WORK, DRIFT_N)
    elapsed = stamps[-1] - stamps[0]
    assert elapsed - (DRIFT_N - 1) * DRIFT_DT > DRIFT_TOLERANCE_S


def test_overrun_runs_late_tick_once_and_stays_on_grid() -> None:
    dt = 0.02
    record: list[tuple[int, float, float]] = []  # (tick, deadline, start)
    loop = EventLoop(dt)

    def cb(ctx: Any) -> None:
        record.append((loop.ticks, loop.deadline, loop.now))
        if loop.ticks == 2:
            time.sleep(2.5 * dt)  # overrun: ends in the middle of tick 4's period
        if loop.ticks >= 6:
            loop.stop_event.set()

    loop.add_callback(cb)
    loop.run()
    t0 = record[0][1]
    index = [round((d - t0) / dt) for _, d, _ in record]
    for (_, d, start), k in zip(record, index, strict=True):
        assert d == pytest.approx(t0 + k * dt, abs=1e-9)  # deadlines on the grid
        assert start >= d  # never early
    assert loop.overruns >= 1
    assert loop.missed_ticks >= 1
    # no catch-up burst: every grid index at most once, the dropped ones counted
    assert index == sorted(set(index))
    assert index[-1] + 1 == loop.ticks + loop.missed_ticks
    # the tick after the overrun skipped at least the one fully in the past
    assert index[3] - index[2] >= 2
