"""Timing benchmarks: ``EventLoop`` and ``sleep_s`` against dareplane-utils' originals.

Implementations run interleaved in rounds of about one second (ours, original,
original, ours, ...) so that load from other processes hits both alike.

EventLoop figures: mean period error (mean tick-to-tick interval minus ``dt``),
p99 of ``|interval - dt|``, CPU (thread CPU time / wall time, the callback's own
work included) and overhead (CPU minus the callback's work). ``sleep_s``
figures: mean and p99 overshoot and CPU; plain :func:`time.sleep` is the
no-spin floor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dpshm.bench._common import NEEDS_ORIGINAL, Row, import_original

perf = time.perf_counter

#: (dt, callback busy-work) cases of the suite table.
SUITE_CASES = ((0.001, 0.0), (0.010, 0.0005))


def _loop_chunk(cls: Any, dt: float, work: float, dur: float) -> tuple[np.ndarray, float, float]:
    """Run one loop of ``cls`` for ``dur`` s; return (tick times, thread CPU s, wall s)."""
    ts: list[float] = []
    loop = cls(dt)
    stop = loop.stop_event
    t_end = perf() + dur

    def cb(ctx: object) -> None:
        t = perf()
        ts.append(t)
        if work:
            end = t + work
            while perf() < end:
                pass
        if t >= t_end:
            stop.set()

    loop.add_callback(cb)
    c0, w0 = time.thread_time(), perf()
    loop.run()
    return np.asarray(ts), time.thread_time() - c0, perf() - w0


def _sleep_chunk(
    fn: Callable[[float], None], s: float, dur: float
) -> tuple[np.ndarray, float, float]:
    over: list[float] = []
    c0, w0 = time.thread_time(), perf()
    t_end = w0 + dur
    while perf() < t_end:
        t = perf()
        fn(s)
        over.append(perf() - t - s)
    return np.asarray(over), time.thread_time() - c0, perf() - w0


def _rounds(impls: list[str], total: float) -> list[tuple[str, float]]:
    n = max(1, round(total))  # ~1 s chunks
    order: list[tuple[str, float]] = []
    for r in range(n):
        seq = impls if r % 2 == 0 else impls[::-1]
        order += [(impl, total / n) for impl in seq]
    return order


def implementations() -> tuple[dict[str, Any], dict[str, Any]]:
    """The implementations to compare: event loops, and sleeps.

    ``({"ours": EventLoop, "orig": ...}, {"ours": sleep_s, "orig": ...,
    "time.sleep": ...})``; the originals are left out when dareplane-utils is
    not installed.
    """
    from dpshm.dareplane.eventloop import EventLoop
    from dpshm.dareplane.timing import sleep_s

    loops: dict[str, Any] = {"ours": EventLoop}
    sleeps: dict[str, Any] = {"ours": sleep_s}
    ev = import_original("dareplane_utils.general.event_loop")
    tm = import_original("dareplane_utils.general.time")
    if ev is not None and tm is not None:
        loops["orig"] = ev.EventLoop
        sleeps["orig"] = tm.sleep_s
    sleeps["time.sleep"] = time.sleep
    return loops, sleeps


def bench_loop(
    dt: float, work: float, total: float, loops: dict[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    """EventLoop figures per implementation (``err_us``, ``p99_us``, ``cpu``, ``ovh``, ``n``)."""
    loops = loops if loops is not None else implementations()[0]
    res: dict[str, dict[str, list]] = {i: {"iv": [], "cpu": [], "wall": []} for i in loops}
    for impl, dur in _rounds(list(loops), total):
        ts, cpu, wall = _loop_chunk(loops[impl], dt, work, dur)
        res[impl]["iv"].append(np.diff(ts))
        res[impl]["cpu"].append(cpu)
        res[impl]["wall"].append(wall)
    out = {}
    for impl, r in res.items():
        iv = np.concatenate(r["iv"])
        cpu = sum(r["cpu"]) / sum(r["wall"])
        work_frac = work * (len(iv) + len(r["iv"])) / sum(r["wall"])
        out[impl] = {
            "err_us": float(iv.mean() - dt) * 1e6,
            "p99_us": float(np.percentile(np.abs(iv - dt), 99)) * 1e6,
            "cpu": cpu * 100,
            "ovh": (cpu - work_frac) * 100,
            "n": len(iv),
        }
    return out


def bench_sleep(
    s: float, total: float, sleeps: dict[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    """sleep_s figures per implementation (``err_us``, ``p99_us``, ``cpu``, ``n``)."""
    sleeps = sleeps if sleeps is not None else implementations()[1]
    res: dict[str, dict[str, list]] = {i: {"o": [], "cpu": [], "wall": []} for i in sleeps}
    for impl, dur in _rounds(list(sleeps), total):
        over, cpu, wall = _sleep_chunk(sleeps[impl], s, dur)
        res[impl]["o"].append(over)
        res[impl]["cpu"].append(cpu)
        res[impl]["wall"].append(wall)
    out = {}
    for impl, r in res.items():
        o = np.concatenate(r["o"])
        out[impl] = {
            "err_us": float(o.mean()) * 1e6,
            "p99_us": float(np.percentile(o, 99)) * 1e6,
            "cpu": sum(r["cpu"]) / sum(r["wall"]) * 100,
            "n": len(o),
        }
    return out


def measure(total_s: float = 5.0) -> list[Row]:
    """EventLoop rows of the suite: period error and CPU for :data:`SUITE_CASES`."""
    loops, _ = implementations()
    rows = []
    needs = None if "orig" in loops else NEEDS_ORIGINAL
    for dt, work in SUITE_CASES:
        r = bench_loop(dt, work, total_s, loops)
        o, g = r["ours"], r.get("orig")
        case = f"dt={dt * 1e3:g} ms, {f'{work * 1e3:g} ms callback' if work else 'idle callback'}"
        key = f"{dt * 1e3:g}ms{'/busy' if work else ''}"
        base = "original EventLoop"
        rows.append(Row(f"eventloop_err/{key}", f"EventLoop mean period error, {case}", "us",
                        o["err_us"], base, g and g["err_us"], needs,
                        {"ours": o, "orig": g}))  # fmt: skip
        rows.append(Row(f"eventloop_cpu/{key}", f"EventLoop CPU, {case}", "%", o["cpu"], base,
                        g and g["cpu"], needs))  # fmt: skip
    return rows
