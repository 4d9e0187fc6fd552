"""Per-wake CPU of one SharedStreamView consumer, split into its phases.

Starts an outlet (64 ch float32 at 1 kHz, 10 ms chunks, as in
bench_fanout.py) and ``dpshm up``, then runs one consumer loop in this process
for each wake path (doorbell, ZeroMQ), timing each phase with
``time.thread_time`` (CPU of the consumer's thread) and the whole process with
``time.process_time`` (includes ZeroMQ's IO thread):

* ``wait``   -- ``view.wait()``: the head check, the sleep and the wake, the
  registry checks (follow.py);
* ``update`` -- ``view.update()``: bookkeeping + copying only the new rows;
* ``window`` -- ``view.get_window(seconds=1, copy=True)`` (or ``copy=False``);

and then the one-call loop ``view.next_window(seconds=1)`` (row ``next_window``:
its whole cost is in the ``wait`` column, nothing is copied for ``view``).

Usage::

    python benchmarks/profile_wake.py [--seconds 5] [--channels 64 --rate 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from dpshm.bench import fanout as bf  # noqa: E402
from dpshm.bench._common import child_env  # noqa: E402


def consume(name: str, seconds: float, copy: bool, one_call: bool = False) -> dict[str, float]:
    from dpshm.shm.view import SharedStreamView

    tt = time.thread_time_ns
    acc = {"wait": 0, "update": 0, "window": 0}
    wakes = 0
    with SharedStreamView(name) as v:
        v.wait(2.0)
        v.update()
        p0, w0 = time.process_time_ns(), time.perf_counter()
        end = w0 + seconds
        while time.perf_counter() < end:
            t0 = tt()
            if one_call:
                ok = v.next_window(seconds=bf.WINDOW_S, timeout=0.1, copy=copy) is not None
                acc["wait"] += tt() - t0
                wakes += ok
                continue
            ok = v.wait(0.1)
            t1 = tt()
            if not ok:
                acc["wait"] += t1 - t0
                continue
            v.update()
            t2 = tt()
            v.get_window(seconds=bf.WINDOW_S, copy=copy)
            t3 = tt()
            acc["wait"] += t1 - t0
            acc["update"] += t2 - t1
            acc["window"] += t3 - t2
            wakes += 1
        proc = time.process_time_ns() - p0
        wall = time.perf_counter() - w0
        hot = warm_costs(v, copy)
    per = {k: v / max(wakes, 1) / 1e3 for k, v in acc.items()}
    per["process"] = proc / max(wakes, 1) / 1e3
    per["wakes_per_s"] = wakes / wall
    per["cpu_pct"] = 100 * proc / 1e9 / wall
    per.update(hot)
    return per


def warm_costs(v, copy: bool, n: int = 2000) -> dict[str, float]:
    """The same calls in a hot loop (no sleep between them), µs per call: the
    Python work itself, without the cache misses of a process that just woke."""
    out = {}
    for label, fn in (
        ("hot_wait", lambda: v.wait(0)),  # head check + registry throttle, no sleep
        ("hot_update", v.update),  # no new rows: bookkeeping only
        ("hot_window", lambda: v.get_window(seconds=bf.WINDOW_S, copy=copy)),
    ):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        out[label] = (time.perf_counter_ns() - t0) / n / 1e3
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--rate", type=float, default=1000.0)
    a = p.parse_args()
    name = f"prof{uuid.uuid4().hex[:8]}"
    ns = f"prof{uuid.uuid4().hex[:6]}"
    os.environ["DPSHM_NAMESPACE"] = ns
    kw = {"name": name, "channels": a.channels, "rate": a.rate}
    with tempfile.TemporaryDirectory(prefix="dpshm-prof-") as runtime:
        os.environ["XDG_RUNTIME_DIR"] = runtime  # a private supervisor
        env = child_env(XDG_RUNTIME_DIR=runtime, DPSHM_NAMESPACE=ns)
        outlet = bf._Child(bf._role_args("outlet", **kw), env, "outlet")
        sup = None
        try:
            outlet.ready()
            sup = bf._Child(bf.supervisor_args(name), env, "dpshm up")
            bf.wait_shared(name)
            _table(name, a.seconds, a.channels, a.rate)
        finally:
            if sup is not None:
                sup.stop()
            outlet.stop()


def _table(name: str, seconds: float, channels: int, rate: float) -> None:
    print(f"{channels} ch @ {rate:g} Hz, {seconds:g} s per row; µs of CPU per wake")
    print(f"{'wake path':<10} {'loop':<12} {'window':<7} | {'wait':>6} {'update':>7} "
          f"{'window':>7} {'thread':>7} {'process':>8} | {'wakes/s':>7} {'CPU %':>6} | "
          f"hot loop: wait/update/window")  # fmt: skip
    for wake in ("zmq", "doorbell"):
        os.environ["DPSHM_WAKE"] = wake
        for one_call in (False, True):
            for copy in (True, False):
                r = consume(name, seconds, copy, one_call)
                thread = r["wait"] + r["update"] + r["window"]
                loop = "next_window" if one_call else "wait+update"
                print(
                    f"{wake:<10} {loop:<12} {'copy' if copy else 'view':<7} | {r['wait']:>6.1f} "
                    f"{r['update']:>7.1f} {r['window']:>7.1f} {thread:>7.1f} "
                    f"{r['process']:>8.1f} | {r['wakes_per_s']:>7.1f} {r['cpu_pct']:>6.2f} | "
                    f"{r['hot_wait']:.1f}/{r['hot_update']:.1f}/{r['hot_window']:.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
