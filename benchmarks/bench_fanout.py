"""Fan-out benchmark: one LSL stream read by N consumer processes.

Compares, in one run and side by side:

(a) dpshm: ``dpshm up`` + N processes with ``SharedStreamView`` (wake on the
    doorbell -- or ZeroMQ with ``--wake zmq`` -- take in the new rows, copy a
    1 s window: ``get_window(copy=True)``, or a zero-copy view with ``--window view``);
(b) Dareplane: N processes, each with the ORIGINAL ``dareplane_utils``
    ``StreamWatcher`` (its own LSL inlet), calling ``update()`` and copying a
    1 s window every 10 ms;

plus a single direct LSL inlet (blocking pull) as the latency reference.

The outlet pushes 10 ms chunks on absolute deadlines, stamped with
``local_clock()`` at push time; a consumer's latency is ``local_clock()`` when
it sees a chunk minus that chunk's newest timestamp. CPU is the sum of
``psutil`` user+system time of the consumers (and the supervisor for (a)) over
the measurement window, in % of one core; the outlet's own CPU is shown apart.

Usage::

    python benchmarks/bench_fanout.py            # 64ch@1kHz and 256ch@2kHz, N=1,2,4,8
    python benchmarks/bench_fanout.py --quick    # 64ch@1kHz, N=1,8, short runs
    python benchmarks/bench_fanout.py --repeat 3 --wake both   # medians; + a ZeroMQ arm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
CHUNK_S = 0.01
WINDOW_S = 1.0


# -- roles (run in child processes) ------------------------------------------------------


def role_outlet(a: argparse.Namespace) -> None:
    from dpshm import lsl

    out = lsl.Outlet(a.name, "EEG", a.channels, a.rate, "float32", source_id=a.name)
    n = round(CHUNK_S * a.rate)
    chunk = np.random.default_rng(0).standard_normal((n, a.channels)).astype(np.float32)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    t0 = time.perf_counter()
    k = 0
    while not stop:
        k += 1
        delay = t0 + k * CHUNK_S - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        out.push_chunk(chunk, timestamp=lsl.local_clock())
    out.close()


def _finish(a: argparse.Namespace, lat: list[float]) -> None:
    Path(a.out).write_text(json.dumps({"lat": lat}))


def role_dpshm(a: argparse.Namespace) -> None:
    from dpshm import lsl
    from dpshm.view import SharedStreamView

    lat: list[float] = []
    with SharedStreamView(a.name) as v:
        print("ready", flush=True)
        while lsl.local_clock() < a.t_end:
            if not v.wait(0.1):
                continue
            v.update()
            _, ts = v.get_window(seconds=WINDOW_S, copy=a.window != "view")
            now = lsl.local_clock()
            if now >= a.t_start and len(ts):
                lat.append(now - float(ts[-1]))
    _finish(a, lat)


def role_dareplane(a: argparse.Namespace) -> None:
    import pylsl  # the reference implementation uses pylsl directly
    from dareplane_utils.stream_watcher.lsl_stream_watcher import StreamWatcher

    sw = StreamWatcher(a.name, buffer_size_s=WINDOW_S)
    sw.connect_to_stream()
    print("ready", flush=True)
    lat: list[float] = []
    t0 = time.perf_counter()
    k = 0
    while pylsl.local_clock() < a.t_end:
        sw.update()
        if sw.n_new:
            sw.n_new = 0
            sw.unfold_buffer()
            ts = sw.unfold_buffer_t()
            now = pylsl.local_clock()
            if now >= a.t_start:
                lat.append(now - float(ts[-1]))
        k += 1
        delay = t0 + k * CHUNK_S - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    _finish(a, lat)


def role_direct(a: argparse.Namespace) -> None:
    from dpshm import lsl

    spec = next(s for s in lsl.resolve_streams(2.0) if s.name == a.name)
    inlet = lsl.Inlet(spec)
    data = np.zeros((4096, spec.n_channels), np.float32)
    ts = np.zeros(4096)
    print("ready", flush=True)
    lat: list[float] = []
    while lsl.local_clock() < a.t_end:
        n = inlet.pull_into(data, ts, timeout=0.1)
        now = lsl.local_clock()
        if n and now >= a.t_start:
            lat.append(now - float(ts[n - 1]))
    inlet.close()
    _finish(a, lat)


ROLES = {"outlet": role_outlet, "dpshm": role_dpshm, "dareplane": role_dareplane}
ROLES["direct"] = role_direct


# -- orchestration --------------------------------------------------------------------


class Child:
    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
            text=True,
        )
        self.ps = psutil.Process(self.proc.pid)

    def ready(self, timeout: float = 30.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == "ready":
                return
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args} exited with {self.proc.returncode}")
        raise TimeoutError(f"{self.proc.args} not ready")

    def cpu(self) -> float:
        try:
            t = self.ps.cpu_times()
            kids = sum(c.cpu_times().user + c.cpu_times().system for c in self.ps.children())
            return t.user + t.system + kids
        except psutil.Error:
            return 0.0

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _me(role: str, **kw: object) -> list[str]:
    """Command line running this script in ``role``."""
    args = [sys.executable, str(Path(__file__).resolve()), "--role", role]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def _lsl_clock() -> float:
    from dpshm import lsl

    return lsl.local_clock()


def _shared(registry, ns: str, name: str) -> bool:
    try:
        return any(e.name == name for e in registry.read_registry(ns).streams.values())
    except LookupError:
        return False


def run_case(
    mode: str,
    n: int,
    channels: int,
    rate: float,
    seconds: float,
    tmp: Path,
    wake: str | None = None,
    window: str = "copy",
) -> dict:
    """One measurement: returns CPU % (consumers + supervisor), outlet CPU %, latencies.

    ``wake`` sets ``DPSHM_WAKE`` for dpshm's consumers (None: the default,
    doorbell on Linux); ``window`` is ``"copy"`` (``get_window(copy=True)``,
    the same work as the reference's ``unfold_buffer``) or ``"view"``.
    """
    from dpshm import registry

    name = f"bench{uuid.uuid4().hex[:8]}"
    ns = f"bench{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, DPSHM_NAMESPACE=ns, PYTHONPATH=str(REPO))
    if wake:
        env["DPSHM_WAKE"] = wake
    children: list[Child] = []
    outlet = Child(_me("outlet", name=name, channels=channels, rate=rate), env)
    try:
        outlet.ready()
        if mode == "dpshm":
            sup = Child(
                [sys.executable, "-m", "dpshm", "up", "--quiet", "--stream", name,
                 "--resolve-interval-s", "0.5", "--buffer-s", "5"],
                env,
            )  # fmt: skip
            children.append(sup)

            deadline = time.monotonic() + 20
            while not _shared(registry, ns, name):
                if time.monotonic() > deadline:
                    raise TimeoutError("supervisor did not share the stream")
                time.sleep(0.05)
        setup_s = 4.0 + 0.3 * n
        t_start = _lsl_clock() + setup_s
        t_end = t_start + seconds
        outs, consumers = [], []
        for i in range(n if mode != "direct" else 1):
            out = tmp / f"{mode}-{n}-{i}.json"
            outs.append(out)
            c = Child(
                _me(mode, name=name, t_start=t_start, t_end=t_end, out=out, channels=channels,
                    rate=rate, window=window),
                env,
            )  # fmt: skip
            children.append(c)
            consumers.append(c)
        for c in consumers:
            c.ready()
        time.sleep(max(0.0, t_start - _lsl_clock()))
        cpu0 = [c.cpu() for c in children]
        out0 = outlet.cpu()
        w0 = time.perf_counter()
        time.sleep(max(0.0, t_end - _lsl_clock()))
        wall = time.perf_counter() - w0
        cpu1 = [c.cpu() for c in children]
        out1 = outlet.cpu()
        for c in consumers:
            c.proc.wait(30)
        lat = []
        for o in outs:
            lat += json.loads(o.read_text())["lat"]
        lat_ms = np.asarray(lat) * 1e3
        sup_cpu = 100 * (cpu1[0] - cpu0[0]) / wall if mode == "dpshm" else 0.0
        return {
            "cpu": 100 * (sum(cpu1) - sum(cpu0)) / wall,
            "sup_cpu": sup_cpu,
            "outlet_cpu": 100 * (out1 - out0) / wall,
            "p50": float(np.percentile(lat_ms, 50)) if len(lat_ms) else float("nan"),
            "p99": float(np.percentile(lat_ms, 99)) if len(lat_ms) else float("nan"),
            "n_lat": len(lat_ms),
        }
    finally:
        for c in reversed(children):
            c.stop()
        outlet.stop()
        shutil.rmtree(registry.namespace_dir(ns, create=False), ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64ch@1kHz only, N=1,8, 3 s runs")
    p.add_argument("--seconds", type=float, default=None, help="measurement window per run")
    p.add_argument("--ns", default="1,2,4,8", help="consumer counts, comma separated")
    # child roles
    p.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    for k in ("name", "out"):
        p.add_argument(f"--{k}", help=argparse.SUPPRESS)
    for k in ("t-start", "t-end", "rate"):
        p.add_argument(f"--{k}", type=float, help=argparse.SUPPRESS)
    p.add_argument("--channels", type=int, help=argparse.SUPPRESS)
    p.add_argument(
        "--window",
        choices=("copy", "view"),
        default="copy",
        help="dpshm consumers take get_window(copy=True) (default: the reference's work) "
        "or a zero-copy view",
    )
    p.add_argument(
        "--wake",
        choices=("doorbell", "zmq", "both"),
        default="doorbell",
        help="dpshm consumers' wake path (DPSHM_WAKE); 'both' adds a ZeroMQ column",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; medians are shown")
    a = p.parse_args()
    if a.role:
        ROLES[a.role](a)
        return

    cases = [(64, 1000.0)] if a.quick else [(64, 1000.0), (256, 2000.0)]
    ns = [1, 8] if a.quick else [int(x) for x in a.ns.split(",")]
    seconds = a.seconds or (3.0 if a.quick else 6.0)
    print(f"fan-out benchmark: {seconds:g} s per run, 10 ms chunks, 1 s window per wake/10 ms")
    copy_arg = "copy=True" if a.window == "copy" else "copy=False"
    print(
        f"dpshm consumers: wake {a.wake}, get_window({copy_arg}); "
        f"medians of {a.repeat} run(s); CPU in % of one core (dpshm: supervisor share in ())"
    )
    print(f"machine: {psutil.cpu_count()} cores, python {sys.version.split()[0]}\n")
    zmq_col = f" {'zmq CPU%':>9}" if a.wake == "both" else ""
    hdr = (
        f"{'stream':<12} {'N':>2} | {'dpshm CPU% (sup)':>16}{zmq_col} {'dareplane CPU%':>14} "
        f"{'ratio':>6} | {'dpshm p50/p99 ms':>17} {'dareplane p50/p99':>18} "
        f"{'direct p50/p99':>15} | "
        f"{'outlet CPU% dpshm/dp':>20}"
    )
    print(hdr)
    print("-" * len(hdr))
    wake = None if a.wake == "both" else a.wake

    def med(runs: list[dict]) -> dict:
        return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for ch, rate in cases:
            direct = med([run_case("direct", 1, ch, rate, seconds, tmp) for _ in range(a.repeat)])
            for n in ns:
                ra, rb, rz = [], [], []
                for _ in range(a.repeat):  # interleaved, so drifting load hits every arm
                    ra.append(run_case("dpshm", n, ch, rate, seconds, tmp, wake, a.window))
                    rb.append(run_case("dareplane", n, ch, rate, seconds, tmp))
                    if a.wake == "both":
                        rz.append(run_case("dpshm", n, ch, rate, seconds, tmp, "zmq", a.window))
                r_a, r_b = med(ra), med(rb)
                zcell = f" {med(rz)['cpu']:>9.1f}" if rz else ""
                print(
                    f"{f'{ch}ch@{rate / 1000:g}kHz':<12} {n:>2} | "
                    f"{r_a['cpu']:>9.1f} ({r_a['sup_cpu']:>4.1f}){zcell} "
                    f"{r_b['cpu']:>14.1f} {r_a['cpu'] / r_b['cpu']:>6.2f} | "
                    f"{r_a['p50']:>7.2f}/{r_a['p99']:<9.2f} {r_b['p50']:>8.2f}/{r_b['p99']:<9.2f} "
                    f"{direct['p50']:>6.2f}/{direct['p99']:<8.2f} | "
                    f"{r_a['outlet_cpu']:>9.1f}/{r_b['outlet_cpu']:<10.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
