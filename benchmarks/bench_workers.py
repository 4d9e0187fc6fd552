"""Worker benchmarks: start latency and the CPU cost of process workers.

1. Time from sending ``START_WORKER`` (over TCP, to a real SupervisorServer)
   to the worker's first window, for thread and process workers; baselines in
   the same run: attaching a ``SharedStreamView`` and taking a window in this
   process (thread mode's floor) and starting a bare spawn-context process
   that does nothing (process mode's floor).
2. CPU of 4 process workers, each taking a 1 s window of a 64 ch 1 kHz stream
   every 10 ms from shared memory, compared with 4 Dareplane-style modules
   (separate processes) each with its own original dareplane-utils
   ``StreamWatcher`` doing ``update()`` + ``unfold_buffer()`` every 10 ms.
   The same LSL outlet process (64 ch, 1 kHz, 10 ms chunks) feeds both; on the
   dpshm side one bridge process (or ``dpshm up``, with ``--supervisor``) owns
   the only inlet and writes the ring. CPU is summed over every process
   involved (outlet included) with psutil.

Run: ``python benchmarks/bench_workers.py [--quick] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
try:
    import dpshm  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

CH, RATE, CHUNK = 64, 1000, 10  # 64 ch, 1 kHz, 10 ms chunks
N_CONSUMERS = 4


# -- worker targets (imported by name, also inside spawned workers) ---------------------


def first_window(ctx) -> None:
    """Take one 1 s window and log the moment; then wait to be stopped."""
    (view,) = ctx.streams.values()
    data, _ts = view.get_window(n_samples=RATE)
    ctx.logger.info("first window %s at %.6f", data.shape, time.time())
    ctx.stop_event.wait(30)


def window_consumer(ctx) -> None:
    """A 1 s window every 10 ms (deadline-paced), reduced to channel means."""
    (view,) = ctx.streams.values()
    period = ctx.kwargs.get("period_s", 0.01)
    deadline = time.perf_counter()
    n = 0
    while not ctx.stop_event.is_set():
        data, _ts = view.get_window(n_samples=RATE)
        data.mean(axis=0)
        n += 1
        deadline += period
        ctx.stop_event.wait(max(0.0, deadline - time.perf_counter()))
    ctx.logger.info("consumer %s took %d windows", ctx.id, n)


# -- helper processes (spawned) ------------------------------------------------------------


def _outlet_proc(name: str, stop) -> None:
    import pylsl

    info = pylsl.StreamInfo(name, "EEG", CH, RATE, "float32", f"bench-{name}")
    outlet = pylsl.StreamOutlet(info, chunk_size=CHUNK)
    chunk = np.random.default_rng(0).standard_normal((CHUNK, CH)).astype(np.float32)
    t_next = time.perf_counter()
    while not stop.is_set():
        outlet.push_chunk(chunk)
        t_next += CHUNK / RATE
        time.sleep(max(0.0, t_next - time.perf_counter()))
    del outlet


def _bridge_proc(name: str, ring_name: str, ready, stop) -> None:
    """One LSL inlet -> shared ring (what the supervisor does for each stream)."""
    import pylsl

    from dpshm.shm.ring import SharedRing

    (info,) = pylsl.resolve_byprop("name", name, 1, 10.0)
    inlet = pylsl.StreamInlet(info, max_buflen=5)
    ring = SharedRing.create(ring_name, CH, 5 * RATE, "float32", srate=RATE)
    buf = np.zeros((1024, CH), np.float32)
    ts = np.zeros(1024)
    ready.set()
    try:
        while not stop.is_set():
            _, t = inlet.pull_chunk(timeout=0.1, max_samples=1024, dest_obj=buf)
            if t:
                k = len(t)
                ts[:k] = t
                ring.write(buf[:k], ts[:k])
    finally:
        inlet.close_stream()
        ring.close()
        ring.unlink()


def _dareplane_module(name: str, ready, stop) -> None:
    """A Dareplane-style module: its own StreamWatcher (own LSL inlet)."""
    from dareplane_utils.stream_watcher.lsl_stream_watcher import StreamWatcher

    sw = StreamWatcher(name, buffer_size_s=2)
    sw.connect_to_stream()
    ready.set()
    deadline = time.perf_counter()
    while not stop.is_set():
        sw.update()
        sw.unfold_buffer()[-RATE:].mean(axis=0)
        deadline += 0.01
        stop.wait(max(0.0, deadline - time.perf_counter()))
    sw.disconnect()


# -- measurements ----------------------------------------------------------------------------


def _cpu(procs: list[psutil.Process]) -> float:
    from dpshm.bench._common import process_cpu_s

    return sum(process_cpu_s(p.pid) for p in procs)


def _measure(procs: list[psutil.Process], seconds: float) -> float:
    """Percent of one core used by ``procs`` together over ``seconds``."""
    c0, t0 = _cpu(procs), time.perf_counter()
    time.sleep(seconds)
    return 100.0 * (_cpu(procs) - c0) / (time.perf_counter() - t0)


class _FirstWindows(logging.Handler):
    def __init__(self):
        super().__init__()
        self.times: dict[str, float] = {}
        self.event = threading.Event()

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("first window"):
            wid = record.name.split(".")[2]
            self.times[wid] = float(msg.rsplit(" ", 1)[1])
            self.event.set()


def bench_start_latency(reps: int) -> dict[str, list[float]]:
    from types import MappingProxyType, SimpleNamespace

    from dpshm.control.commands import Frontend, SupervisorServer
    from dpshm.control.workers import WorkerManager
    from dpshm.shm.ring import SharedRing
    from dpshm.shm.view import SharedStreamView

    ring_name = f"bench{uuid.uuid4().hex[:8]}"
    ring = SharedRing.create(ring_name, CH, 5 * RATE, "float32", srate=RATE)
    ring.write(np.zeros((2 * RATE, CH), np.float32), np.arange(2 * RATE) / RATE)

    def spec(name, mode):
        restart = SimpleNamespace(policy="off", max_restarts=0, backoff_s=1.0)
        return SimpleNamespace(
            name=name, target="bench_workers:first_window", mode=mode,
            kwargs=MappingProxyType({}), restart=restart,
        )  # fmt: skip

    specs = {"t": spec("t", "thread"), "p": spec("p", "process")}
    manager = WorkerManager(specs, resolve=lambda s: ring_name, search_path=str(HERE))
    server = SupervisorServer(Frontend(manager, list), 0)
    server.init_server()
    th = threading.Thread(target=server.start_listening, daemon=True)
    th.start()
    handler = _FirstWindows()
    wlog = logging.getLogger("dpshm.worker")
    wlog.addHandler(handler)
    wlog.setLevel(logging.INFO)
    out: dict[str, list[float]] = {"thread": [], "process": [], "attach": [], "spawn": []}
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    f = sock.makefile("rb")
    f.readline()
    try:
        for _ in range(reps):
            for mode, name in (("thread", "t"), ("process", "p")):
                handler.event.clear()
                t0 = time.time()
                sock.sendall(f'START_WORKER|{{"worker": "{name}", "streams": ["s"]}};'.encode())
                wid = f.readline().decode().strip()
                if not handler.event.wait(30) or wid not in handler.times:
                    raise RuntimeError(f"no first window from {wid}")
                out[mode].append(handler.times[wid] - t0)
                sock.sendall(f'STOP_WORKER|{{"id": "{wid}"}};'.encode())
                f.readline()
            t0 = time.perf_counter()
            with SharedStreamView(ring_name) as v:
                v.get_window(n_samples=RATE)
            out["attach"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            p = mp.get_context("spawn").Process(target=int)
            p.start()
            p.join()
            out["spawn"].append(time.perf_counter() - t0)
    finally:
        sock.close()
        server.shutdown()
        th.join(10)
        manager.close()
        wlog.removeHandler(handler)
        ring.close()
        ring.unlink()
    return out


def bench_cpu(seconds: float, use_supervisor: bool) -> dict[str, float]:
    from types import MappingProxyType, SimpleNamespace

    from dpshm.control.context import attach_view
    from dpshm.control.workers import WorkerManager

    ctx = mp.get_context("spawn")
    name = f"bench{uuid.uuid4().hex[:8]}"
    stop = ctx.Event()
    outlet = ctx.Process(target=_outlet_proc, args=(name, stop), daemon=True)
    outlet.start()
    results: dict[str, float] = {}
    try:
        # (a) dpshm: one inlet -> ring, 4 process workers on the ring
        ring_name = f"{name}_ring"
        bstop, ready = ctx.Event(), ctx.Event()
        sup = None
        attach = attach_view
        if use_supervisor:
            ring_name = name  # attach by LSL name through the supervisor's registry
            ns = f"bench{uuid.uuid4().hex[:6]}"
            attach = functools.partial(attach_view, namespace=ns)
            cmd = [sys.executable, "-m", "dpshm", "up", "--quiet", "--port", "0", "--stream", name]
            sup = subprocess.Popen(
                cmd, env={**os.environ, "DPSHM_NAMESPACE": ns}, stdout=subprocess.DEVNULL
            )
            writer = psutil.Process(sup.pid)
            _wait_ring(ns)
        else:
            bridge = ctx.Process(target=_bridge_proc, args=(name, ring_name, ready, bstop))
            bridge.start()
            if not ready.wait(20):
                raise RuntimeError("bridge did not connect")
            writer = psutil.Process(bridge.pid)
        restart = SimpleNamespace(policy="off", max_restarts=0, backoff_s=1.0)
        spec = SimpleNamespace(
            name="c", target="bench_workers:window_consumer", mode="process",
            kwargs=MappingProxyType({}), restart=restart,
        )  # fmt: skip
        with WorkerManager(
            {"c": spec}, resolve=lambda s: ring_name, attach=attach, search_path=str(HERE)
        ) as manager:
            ids = [manager.start("c", ["s"]) for _ in range(N_CONSUMERS)]
            time.sleep(1.0)  # let them import and settle
            workers = [psutil.Process(manager.get(i)["pid"]) for i in ids]
            o = psutil.Process(outlet.pid)
            c0 = [_cpu([o]), _cpu([writer]), _cpu(workers)]
            t0 = time.perf_counter()
            time.sleep(seconds)
            dt = time.perf_counter() - t0
            c1 = [_cpu([o]), _cpu([writer]), _cpu(workers)]
            pct = [100 * (b - a) / dt for a, b in zip(c0, c1, strict=True)]
            results.update(dpshm_outlet=pct[0], dpshm_writer=pct[1], dpshm_workers=pct[2])
            manager.stop_all()
        if sup is not None:
            sup.terminate()
            sup.wait(10)
        else:
            bstop.set()
            bridge.join(10)
        # (b) 4 Dareplane-style modules, each with its own StreamWatcher / inlet
        mstop = ctx.Event()
        readies = [ctx.Event() for _ in range(N_CONSUMERS)]
        mods = [ctx.Process(target=_dareplane_module, args=(name, r, mstop)) for r in readies]
        for m in mods:
            m.start()
        for r in readies:
            if not r.wait(30):
                raise RuntimeError("a Dareplane-style module did not connect")
        time.sleep(1.0)
        o = psutil.Process(outlet.pid)
        ps = [psutil.Process(m.pid) for m in mods]
        c0 = [_cpu([o]), _cpu(ps)]
        t0 = time.perf_counter()
        time.sleep(seconds)
        dt = time.perf_counter() - t0
        c1 = [_cpu([o]), _cpu(ps)]
        results["sw_outlet"] = 100 * (c1[0] - c0[0]) / dt
        results["sw_modules"] = 100 * (c1[1] - c0[1]) / dt
        mstop.set()
        for m in mods:
            m.join(10)
    finally:
        stop.set()
        outlet.join(10)
    return results


def _wait_ring(name: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(name in p for p in os.listdir("/dev/shm")):
            return
        time.sleep(0.05)
    raise RuntimeError(f"no ring for {name!r} after {timeout} s")


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
    return f"{1e3 * statistics.median(xs):8.2f} ms (p90 {1e3 * p90:7.2f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions, shorter windows")
    p.add_argument("--seconds", type=float, default=None, help="CPU measuring time per side")
    p.add_argument("--reps", type=int, default=None, help="start-latency repetitions")
    p.add_argument("--supervisor", action="store_true", help="feed the ring with `dpshm up`")
    args = p.parse_args()
    reps = args.reps or (5 if args.quick else 20)
    seconds = args.seconds or (3.0 if args.quick else 10.0)

    print(f"# START_WORKER -> first 1 s window (64 ch, 1 kHz ring), median of {reps}")
    lat = bench_start_latency(reps)
    a, s = statistics.median(lat["attach"]), statistics.median(lat["spawn"])
    print(f"thread worker               {_ms(lat['thread'])}")
    print(f"  baseline: attach + window {_ms(lat['attach'])}")
    print(f"  ratio                     {statistics.median(lat['thread']) / a:8.1f} x")
    print(f"process worker              {_ms(lat['process'])}")
    print(f"  baseline: bare spawn      {_ms(lat['spawn'])}")
    print(f"  ratio                     {statistics.median(lat['process']) / s:8.2f} x")

    print(f"\n# CPU, {N_CONSUMERS} consumers of a {CH} ch {RATE} Hz stream, 1 s window / 10 ms,"
          f" {seconds:g} s each (% of one core)")  # fmt: skip
    r = bench_cpu(seconds, args.supervisor)
    dp = r["dpshm_writer"] + r["dpshm_workers"]
    sw = r["sw_modules"]
    writer = "dpshm up" if args.supervisor else "bridge (1 inlet -> ring)"
    print(f"dpshm: {N_CONSUMERS} process workers     {r['dpshm_workers']:6.1f} %")
    print(f"dpshm: {writer:<24}  {r['dpshm_writer']:6.1f} %")
    print(f"dpshm: total (excl. outlet)     {dp:6.1f} %   outlet {r['dpshm_outlet']:5.1f} %")
    base = f"baseline: {N_CONSUMERS} StreamWatcher modules"
    print(f"{base} {sw:6.1f} %   outlet {r['sw_outlet']:5.1f} %")
    print(f"ratio dpshm / baseline          {dp / sw:6.2f}   (incl. outlet: "
          f"{(dp + r['dpshm_outlet']) / (sw + r['sw_outlet']):.2f})")  # fmt: skip
    print(json.dumps({"latency_s": {k: statistics.median(v) for k, v in lat.items()}, "cpu": r}))


if __name__ == "__main__":
    main()
