"""Benchmark dpshm's EventLoop and sleep_s against dareplane-utils' originals.

Run: ``python benchmarks/bench_timing.py [--quick] [--seconds S]``

Cases run interleaved in rounds (ours, original, original, ours, ...) so that
load from other processes on the machine hits both alike. For every case the
figures of both implementations are printed side by side, with the ratio
ours / original for CPU.

EventLoop (periods 1 ms and 10 ms; an idle callback and one that busy-works
0.5 ms): mean period error (mean of tick-to-tick intervals minus ``dt``), p99 of
``|interval - dt|``, CPU = thread CPU time / wall time (including the callback's
own work), and "ovh" = CPU minus the callback's work.

sleep_s (1, 5, 10 ms): mean and p99 overshoot, CPU; plain ``time.sleep`` is the
floor (no spin at all).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from dareplane_utils.general.event_loop import EventLoop as OrigEventLoop
from dareplane_utils.general.time import sleep_s as orig_sleep_s

from dpshm import timing
from dpshm.timing import EventLoop, get_spin_margin, set_spin_quantile, sleep_s

perf = time.perf_counter


def _loop_chunk(impl: str, dt: float, work: float, dur: float) -> tuple[np.ndarray, float, float]:
    """Run one loop for ``dur`` s; return (tick times, thread cpu s, wall s)."""
    ts: list[float] = []
    loop = EventLoop(dt) if impl == "ours" else OrigEventLoop(dt)
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
    while True:
        t = perf()
        if t >= t_end:
            break
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


def bench_loop(dt: float, work: float, total: float) -> dict[str, dict[str, float]]:
    res: dict[str, dict[str, list]] = {
        i: {"iv": [], "cpu": [], "wall": []} for i in ("ours", "orig")
    }
    for impl, dur in _rounds(["ours", "orig"], total):
        ts, cpu, wall = _loop_chunk(impl, dt, work, dur)
        res[impl]["iv"].append(np.diff(ts))
        res[impl]["cpu"].append(cpu)
        res[impl]["wall"].append(wall)
    out = {}
    for impl, r in res.items():
        iv = np.concatenate(r["iv"])
        cpu = sum(r["cpu"]) / sum(r["wall"])
        work_frac = work * (len(iv) + len(r["iv"])) / sum(r["wall"])
        out[impl] = {
            "err_us": (iv.mean() - dt) * 1e6,
            "p99_us": np.percentile(np.abs(iv - dt), 99) * 1e6,
            "cpu": cpu * 100,
            "ovh": (cpu - work_frac) * 100,
            "n": len(iv),
        }
    return out


def bench_sleep(s: float, total: float) -> dict[str, dict[str, float]]:
    fns = {"ours": sleep_s, "orig": orig_sleep_s, "time.sleep": time.sleep}
    res: dict[str, dict[str, list]] = {i: {"o": [], "cpu": [], "wall": []} for i in fns}
    for impl, dur in _rounds(list(fns), total):
        over, cpu, wall = _sleep_chunk(fns[impl], s, dur)
        res[impl]["o"].append(over)
        res[impl]["cpu"].append(cpu)
        res[impl]["wall"].append(wall)
    out = {}
    for impl, r in res.items():
        o = np.concatenate(r["o"])
        out[impl] = {
            "err_us": o.mean() * 1e6,
            "p99_us": np.percentile(o, 99) * 1e6,
            "cpu": sum(r["cpu"]) / sum(r["wall"]) * 100,
            "n": len(o),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 s per case instead of 10 s")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per case")
    ap.add_argument(
        "--quantile", type=float, default=None, help="spin quantile (set_spin_quantile) for ours"
    )
    args = ap.parse_args()
    if args.quantile is not None:
        set_spin_quantile(args.quantile)
    total = args.seconds or (1.0 if args.quick else 10.0)
    print(
        f"# {total:g} s per implementation and case, interleaved in ~1 s rounds; "
        f"spin quantile {timing._ESTIMATOR.quantile}; load average {os.getloadavg()[0]:.2f}"
    )
    print("## EventLoop: mean period error, p99 |period - dt|, CPU (ovh = CPU minus callback work)")
    hdr = (
        f"{'case':<20}{'ours err':>10}{'p99':>8}{'cpu%':>7}{'ovh%':>7}"
        f"{'orig err':>10}{'p99':>8}{'cpu%':>7}{'ovh%':>7}{'cpu ratio':>11}{'ovh ratio':>11}"
    )
    print(hdr + "\n" + "-" * len(hdr))
    for dt in (0.001, 0.010):
        for work in (0.0, 0.0005):
            r = bench_loop(dt, work, total)
            o, g = r["ours"], r["orig"]
            case = f"dt={dt * 1e3:g}ms {'busy0.5ms' if work else 'idle'}"
            print(
                f"{case:<20}{o['err_us']:>+8.1f}us{o['p99_us']:>6.0f}us{o['cpu']:>7.1f}"
                f"{o['ovh']:>7.1f}{g['err_us']:>+8.1f}us{g['p99_us']:>6.0f}us{g['cpu']:>7.1f}"
                f"{g['ovh']:>7.1f}{o['cpu'] / g['cpu']:>11.2f}{o['ovh'] / g['ovh']:>11.2f}"
            )
    print("\n## sleep_s: mean overshoot, p99 overshoot, CPU (time.sleep = no-spin floor)")
    hdr = (
        f"{'case':<12}{'ours mean':>11}{'p99':>8}{'cpu%':>7}{'orig mean':>11}{'p99':>8}"
        f"{'cpu%':>7}{'sleep mean':>12}{'p99':>8}{'cpu%':>7}{'cpu ratio':>11}"
    )
    print(hdr + "\n" + "-" * len(hdr))
    for s in (0.001, 0.005, 0.010):
        r = bench_sleep(s, total)
        o, g, b = r["ours"], r["orig"], r["time.sleep"]
        print(
            f"{f's={s * 1e3:g}ms':<12}{o['err_us']:>9.1f}us{o['p99_us']:>6.0f}us{o['cpu']:>7.1f}"
            f"{g['err_us']:>9.1f}us{g['p99_us']:>6.0f}us{g['cpu']:>7.1f}"
            f"{b['err_us']:>10.1f}us{b['p99_us']:>6.0f}us{b['cpu']:>7.1f}"
            f"{o['cpu'] / g['cpu']:>11.2f}"
        )
    margins = ", ".join(
        f"{s * 1e3:g} ms: {get_spin_margin(s) * 1e6:.0f} us" for s in (1e-3, 5e-3, 1e-2)
    )
    print(f"\nlearned spin margins after the run: {margins}")


if __name__ == "__main__":
    main()
