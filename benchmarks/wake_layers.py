"""What one consumer wake-up costs, layer by layer, measured side by side in one run.

Starts an outlet (64 ch float32 at 1 kHz, 10 ms chunks by default) and
``dpshm up``, then consumer processes of several kinds at once, ``--each`` of
every kind (default 2, so 8 consumers as in the fan-out benchmark's N = 8). All
kinds wake on the same chunks under the same machine load, so their CPU per
wake-up compares directly:

* ``recv``        -- a bare blocking ``recv_into`` on the view's doorbell socket:
  the floor of a Python process woken by a datagram (kernel + interpreter);
* ``bell+head``   -- ``Doorbell.wait()`` and reading the ring head;
* ``wait``        -- ``SharedStreamView.wait()`` (registry throttle, head checks,
  the doorbell), cursor moved to the head;
* ``next_window`` -- ``SharedStreamView.next_window(seconds=1.0)``: the above
  plus a zero-copy 1 s window (``--copy``: a copied one).

CPU is each process's on-CPU time from ``/proc/<pid>/task/*/schedstat``
(nanoseconds; psutil's 10 ms ticks are too coarse for single processes),
divided by the chunks pushed meanwhile. Linux only (doorbells are).

Usage::

    python benchmarks/wake_layers.py [--seconds 6] [--each 2] [--copy]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from dpshm.bench import fanout
from dpshm.bench._common import CHUNK_S, child_env, process_cpu_s

KINDS = ("recv", "bell+head", "wait", "next_window")


def consumer(kind: str, name: str, copy: bool) -> None:
    """Child process: wake on every chunk the ``kind`` way until SIGTERM ends it."""
    from dpshm.shm.view import SharedStreamView

    v = SharedStreamView(name)
    bell, ring = v._link.bell, v.ring  # type: ignore[union-attr]
    if bell is None:
        raise SystemExit("no doorbell: this benchmark needs Linux and DPSHM_WAKE unset")
    if kind == "recv":  # the fan-out benchmark's floor arm: one recv per wake, nothing else
        fanout.doorbell_floor(v, stop=[])
        return
    print("ready", flush=True)
    if kind == "bell+head":
        while True:
            bell.wait(0.1)
            v._cursor = ring.head
    elif kind == "wait":
        while True:
            if v.wait(0.1):
                v._cursor = v.ring.head
    else:
        while True:
            v.next_window(seconds=1.0, timeout=0.1, copy=copy)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=6.0, help="measurement window")
    p.add_argument("--each", type=int, default=2, help="consumer processes of every kind")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--copy", action="store_true", help="next_window copies its window")
    p.add_argument("--child", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        consumer(a.child[0], a.child[1], a.copy)
        return
    if not sys.platform.startswith("linux"):
        raise SystemExit("wake_layers.py reads /proc/<pid>/task/*/schedstat: Linux only")

    uid = uuid.uuid4().hex[:8]
    name = f"layers{uid}"
    kw = {"name": name, "channels": a.channels, "rate": a.rate}
    with tempfile.TemporaryDirectory(prefix="dpshm-layers-") as runtime:
        env = child_env(XDG_RUNTIME_DIR=runtime, DPSHM_NAMESPACE=f"layers{uid}")
        env.pop("DPSHM_WAKE", None)
        procs: list[fanout._Child] = []
        try:
            outlet = fanout._Child(fanout._role_args("outlet", **kw), env, "outlet")
            procs.append(outlet)
            outlet.ready()
            sup = fanout._Child(fanout.supervisor_args(name), env, "dpshm up")
            procs.append(sup)
            os.environ.update({k: env[k] for k in ("XDG_RUNTIME_DIR", "DPSHM_NAMESPACE")})
            fanout.wait_shared(name)
            kinds = [k for _ in range(a.each) for k in KINDS]  # interleaved start order
            args = [sys.executable, __file__, *(["--copy"] if a.copy else []), "--child"]
            consumers = [fanout._Child([*args, k, name], env, k) for k in kinds]
            procs += consumers
            for c in consumers:
                c.ready()
            time.sleep(1.0)  # settle
            pids = [c.proc.pid for c in consumers]
            cpu = process_cpu_s
            c0, s0, w0 = [cpu(q) for q in pids], cpu(sup.proc.pid), time.perf_counter()
            time.sleep(a.seconds)
            c1, s1, wall = [cpu(q) for q in pids], cpu(sup.proc.pid), time.perf_counter() - w0
        finally:
            for c in reversed(procs):
                c.stop()
    wakes = wall / CHUNK_S
    print(f"{a.channels} ch @ {a.rate:g} Hz, 10 ms chunks, {a.seconds:g} s, {len(kinds)} consumers "
          f"({a.each} of each kind), window {'copied' if a.copy else 'zero-copy'}")  # fmt: skip
    print(f"{'kind':<12} | CPU µs per wake-up (mean of {a.each}) | % of one core each")
    for k in KINDS:
        per = [(c1[i] - c0[i]) for i in range(len(kinds)) if kinds[i] == k]
        us = 1e6 * sum(per) / len(per) / wakes
        print(f"{k:<12} | {us:>33.1f} | {100 * sum(per) / len(per) / wall:>6.2f}")
    print(f"supervisor: {100 * (s1 - s0) / wall:.2f} % of one core")


if __name__ == "__main__":
    main()
