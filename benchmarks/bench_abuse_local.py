"""Benchmark: the supervisor and a consumer under local abuse, side by side with a quiet run.

Run (as root for the second-uid phases; otherwise they run as your own uid)::

    python benchmarks/bench_abuse_local.py [--seconds 8] [--sockets 2000] [--src DIR]

One run, one supervisor (``dpshm up``) sharing one real LSL outlet (64 ch,
1 kHz, 10-sample chunks), one consumer process waking on the doorbell
(``SharedStreamView.wait`` + ``read_new``), in consecutive phases:

``quiet``
    nothing else.
``2000 sockets (uid 65534)``
    a second user (``nobody``, a forked child) opens ``--sockets`` doorbell
    sockets and subscribes each to the real stream (blocking sends, so each
    gets through), and again every 0.25 s, as a consumer re-sends.
``junk (uid 65534)``
    the second user floods subscriptions to unique 400-byte junk keys as fast
    as the socket queue accepts them.
``junk (own uid)``
    the same flood from the supervisor's own uid (passes the credential check,
    meets the stream filter and the subscription cap).

Per phase: the supervisor's CPU (% of one core, from schedstat) and RSS at the
phase's end, and the consumer's wake latency (LSL clock at wake minus the
newest sample's timestamp) p50/p99; ratios to the quiet phase. ``--src``
runs supervisor and consumer from another checkout (e.g. an older version)
for comparison. Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from dpshm.bench._common import percentiles, process_cpu_s

OTHER_UID = 65534
RESUBSCRIBE_S = 0.25

OUTLET = r"""
import sys, time, numpy as np, pylsl
name, n_ch, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
out = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", n_ch, rate, "float32", name + "-sid"))
chunk = np.zeros((10, n_ch), np.float32)
t_next = time.perf_counter()
while True:
    t_next += 10 / rate
    time.sleep(max(0.0, t_next - time.perf_counter()))
    out.push_chunk(chunk, pylsl.local_clock())
"""

CONSUMER = r"""
import sys, time, numpy as np, pylsl
from dpshm.shm.view import SharedStreamView
name, ns, out_path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rows = []
with SharedStreamView(name, namespace=ns) as v:
    v.read_new()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if v.wait(0.5):
            now = pylsl.local_clock()
            _, ts, _ = v.read_new()
            if len(ts):
                rows.append((time.time(), now - ts[-1]))
np.save(out_path, np.asarray(rows))
"""


def _sock_flood(address: str, n: int, key: str | None, until: float) -> None:
    """In a child: ``n`` sockets subscribe to ``key`` every 0.25 s, or flood junk keys."""
    ctl = b"\0" + address.encode()
    socks = []
    for _ in range(n if key is not None else 1):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(b"")
        s.settimeout(0.5)  # blocking sends: every subscription gets through, as fast as read
        socks.append(s)
    i = 0
    while time.monotonic() < until:
        if key is not None:
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendto(b"S" + key.encode(), ctl)
                if time.monotonic() >= until:
                    break
            time.sleep(RESUBSCRIBE_S)
        else:
            s = socks[0]
            with contextlib.suppress(OSError):
                s.sendto(b"S" + f"junk-{i}-".ljust(400, "x").encode(), ctl)
            i += 1


def _abuser(address: str, n: int, key: str | None, seconds: float, uid: int | None) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            _sock_flood(address, n, key, time.monotonic() + seconds)
        finally:
            os._exit(0)
    return pid


def _registry(ns: str, env: dict, timeout: float = 30.0) -> dict:
    code = (
        "import json,sys; from dpshm.shm import registry; "
        "r = registry.read_registry(sys.argv[1]); "
        "print(json.dumps({'endpoints': dict(r.endpoints), 'streams': "
        "{k: e.name for k, e in r.streams.items()}}))"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = subprocess.run(
            [sys.executable, "-c", code, ns], env=env, capture_output=True, text=True, timeout=30,
            cwd=tempfile.gettempdir(),
        )  # fmt: skip
        if res.returncode == 0:
            reg = json.loads(res.stdout)
            if reg["streams"]:
                return reg
        time.sleep(0.2)
    raise SystemExit("the supervisor did not share the stream in time")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    p.add_argument("--sockets", type=int, default=2000, help="sockets of the socket phase")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--src", default=None, help="run dpshm from this checkout instead")
    args = p.parse_args()
    src = args.src or str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    ns = f"abuse{os.getpid()}"
    name = f"abuse{os.getpid()}"
    foreign = OTHER_UID if os.getuid() == 0 else None
    who = f"uid {foreign}" if foreign is not None else "own uid (not root)"
    phases = [
        ("quiet", None),
        (f"{args.sockets} sockets ({who})", "sockets"),
        (f"junk ({who})", "junk"),
        ("junk (own uid)", "junk-own"),
    ]
    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-abuse-"))
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-c", OUTLET, name, str(args.channels), str(args.rate)], env=env
        ))  # fmt: skip
        sup = subprocess.Popen(
            [sys.executable, "-m", "dpshm", "up", "--quiet", "--stream", name, "-n", ns],
            env={**env, "DPSHM_NAMESPACE": ns},
            cwd=tmp,  # `python -m` would import dpshm from the current directory first
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(sup)
        reg = _registry(ns, env)
        key = next(iter(reg["streams"]))
        bell = reg["endpoints"].get("doorbell")
        if bell is None:
            raise SystemExit("no doorbell endpoint (not Linux?)")
        total = args.seconds * len(phases) + 2.0
        out = tmp / "lat.npy"
        consumer = subprocess.Popen(
            [sys.executable, "-c", CONSUMER, name, ns, str(out), str(total)],
            env={**env, "DPSHM_NAMESPACE": ns},
            cwd=tmp,
        )
        procs.append(consumer)
        time.sleep(1.0)  # the consumer attached and subscribed
        results = []
        for label, kind in phases:
            abuser = None
            if kind == "sockets":
                abuser = _abuser(bell, args.sockets, key, args.seconds, foreign)
            elif kind == "junk":
                abuser = _abuser(bell, 1, None, args.seconds, foreign)
            elif kind == "junk-own":
                abuser = _abuser(bell, 1, None, args.seconds, None)
            t0, c0 = time.time(), process_cpu_s(sup.pid)
            time.sleep(args.seconds)
            t1, c1 = time.time(), process_cpu_s(sup.pid)
            rss = Path(f"/proc/{sup.pid}/statm").read_text().split()[1]
            rss = int(rss) * os.sysconf("SC_PAGE_SIZE")
            if abuser is not None:
                os.kill(abuser, signal.SIGKILL)
                os.waitpid(abuser, 0)
            results.append({"phase": label, "t": (t0, t1), "cpu": 100 * (c1 - c0) / (t1 - t0),
                            "rss_mb": rss / 2**20})  # fmt: skip
        consumer.wait(total + 30)
        lat = np.load(out)
    finally:
        for pr in reversed(procs):
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
                try:
                    pr.wait(15)
                except subprocess.TimeoutExpired:
                    pr.kill()
                    pr.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    base = None
    print(f"dpshm from {src}; {args.channels} ch at {args.rate:g} Hz, {args.seconds:g} s per phase")
    print(f"{'phase':30s} {'sup CPU %':>9s} {'x quiet':>7s} {'RSS MB':>7s} "
          f"{'wake p50 ms':>11s} {'p99 ms':>7s} {'p99 x quiet':>11s} {'wakes':>6s}")  # fmt: skip
    for r in results:
        t0, t1 = r["t"]
        sel = lat[(lat[:, 0] >= t0) & (lat[:, 0] < t1), 1] if len(lat) else np.empty(0)
        p50, p99 = percentiles(sel, 1e3)
        if base is None:
            base = (r["cpu"], p99)
        print(f"{r['phase']:30s} {r['cpu']:9.1f} {r['cpu'] / base[0]:7.2f} {r['rss_mb']:7.1f} "
              f"{p50:11.2f} {p99:7.2f} {p99 / base[1]:11.2f} {len(sel):6d}")  # fmt: skip


if __name__ == "__main__":
    main()
