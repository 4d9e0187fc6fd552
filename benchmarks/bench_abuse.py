"""Abuse benchmark: the supervisor's command port and data path under hostile clients.

One run, side by side: a real ``dpshm up --port P`` sharing a real LSL outlet
(32 ch, 1 kHz, 10 ms chunks), one ``SharedStreamView`` consumer taking a 1 s
window per wake-up (its latency measured as in :mod:`dpshm.bench.fanout`:
``local_clock()`` when it has the chunk minus the chunk's newest timestamp),
and an ``UP;`` probe (a new connection, ``UP;``, ``1``; one every 20 ms,
1 s timeout) from this process; first with no abuse, then with each abusive
client running in its own process:

* ``http``: ``GET /;CLOSE; HTTP/1.1`` requests, one after the other, as fast as
  they are answered (had ``CLOSE`` run, every later probe would fail);
* ``idle200``: 200 connections that never send a byte, reopened when evicted;
* ``slowloris``: 50 connections, each sending one byte of an endless command
  name every 100 ms;
* ``slowdrip``: 8 connections, each sending a 1 MB unterminated command, then
  one more byte every 2 ms;
* ``junk``: one connection sending ``NOPE;`` as fast as the server reads,
  never reading its ``ERROR`` replies (reconnecting when dropped);
* ``doorbell``: 2000 local sockets subscribed to the stream's doorbell that
  never read, plus junk subscriptions (made-up streams) sent as fast as the
  supervisor takes them.

Usage::

    python benchmarks/bench_abuse.py [--seconds 5] [--repeat 3] [--only http,junk]

Each abuse runs right after a quiet run of the same length (the machine's load
drifts; these pairs see the same). Its row: probes answered during both
(fraction), probe latency p50/p99 under abuse, the consumer's latency p50/p99
quiet and abused and the difference of the p99s, and the supervisor's CPU
(% of one core). Target: 100 % answered, consumer p99 within 1 ms of the
quiet run. ``--repeat N`` shows medians of N pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np

from dpshm.bench import fanout
from dpshm.bench._common import child_env, percentiles

SCENARIOS = ("quiet", "http", "idle200", "slowloris", "slowdrip", "junk", "doorbell")
PROBE_EVERY_S = 0.02
PROBE_TIMEOUT_S = 1.0


# -- abusers (each runs in its own process: --abuser KIND --port P) --------------------


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return None


def _closed(s: socket.socket) -> bool:
    """Whether the server closed ``s`` (reads and discards what it sent)."""
    s.setblocking(False)
    try:
        while True:
            if not s.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def _one_after_another(port: int, stop: list[int]) -> Iterator[socket.socket]:
    """Connections, one at a time, until ``stop`` (each closed when the next is asked for)."""
    while not stop:
        s = _connect(port)
        if s is None:
            time.sleep(0.01)
            continue
        with s:
            yield s


def abuse_http(port: int, stop: list[int]) -> None:
    req = b"GET /;CLOSE; HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for s in _one_after_another(port, stop):
        with contextlib.suppress(OSError):
            s.sendall(req)
            while s.recv(4096):
                pass


def abuse_idle(port: int, stop: list[int], n: int = 200) -> None:
    conns: list[socket.socket] = []
    while not stop:
        kept = []
        for s in conns:
            if _closed(s):
                s.close()
            else:
                kept.append(s)
        conns = kept
        while len(conns) < n and not stop:
            s = _connect(port)
            if s is None:
                break
            conns.append(s)
        time.sleep(0.5)
    for s in conns:
        s.close()


def abuse_slowloris(port: int, stop: list[int], n: int = 50) -> None:
    conns = [s for s in (_connect(port) for _ in range(n)) if s is not None]
    while not stop:
        for i, s in enumerate(conns):
            try:
                s.send(b"A")
            except OSError:
                s.close()
                conns[i] = _connect(port) or s
        time.sleep(0.1)
    for s in conns:
        s.close()


def abuse_slowdrip(port: int, stop: list[int], n: int = 8) -> None:
    conns = [s for s in (_connect(port) for _ in range(n)) if s is not None]
    for s in conns:
        s.sendall(b"ECHO|" + b"a" * 1_000_000)
    while not stop:
        for s in conns:
            with contextlib.suppress(OSError):
                s.send(b"b")
        time.sleep(0.002)
    for s in conns:
        s.close()


def abuse_junk(port: int, stop: list[int]) -> None:
    block = b"NOPE;" * 4096
    for s in _one_after_another(port, stop):
        with contextlib.suppress(OSError):
            while not stop:
                s.sendall(block)


def abuse_doorbell(port: int, stop: list[int], n: int = 2000) -> None:
    """2000 sockets subscribed to the stream's doorbell (never reading), and junk
    subscriptions for made-up streams from one socket, as fast as it can send."""
    from dpshm.shm import registry

    reg = registry.read_registry()
    ctl = b"\0" + reg.endpoints["doorbell"].encode()
    key = next(iter(reg.streams))
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(b"")  # autobind, as a consumer does
        with contextlib.suppress(OSError):
            s.sendto(b"S" + key.encode(), socket.MSG_DONTWAIT, ctl)
        socks.append(s)
    junk = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    junk.bind(b"")
    i = 0
    while not stop:
        i += 1
        try:
            junk.sendto(b"S" + f"junk-{i}".encode(), socket.MSG_DONTWAIT, ctl)
        except OSError:
            time.sleep(0.001)  # the supervisor's queue is full
    for s in [*socks, junk]:
        s.close()


ABUSERS = {
    "http": abuse_http,
    "idle200": abuse_idle,
    "slowloris": abuse_slowloris,
    "slowdrip": abuse_slowdrip,
    "junk": abuse_junk,
    "doorbell": abuse_doorbell,
}


def run_abuser(kind: str, port: int) -> None:
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    ABUSERS[kind](port, stop)


# -- the probe -----------------------------------------------------------------------------


def _probe_once(port: int) -> float | None:
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S) as s:
            s.settimeout(PROBE_TIMEOUT_S)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"UP;")
            data = b""
            while not data.endswith(b"1"):
                left = t0 + PROBE_TIMEOUT_S - time.perf_counter()
                if left <= 0:
                    return None
                s.settimeout(left)
                chunk = s.recv(1024)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    return time.perf_counter() - t0


class Prober(threading.Thread):
    """Probes ``UP;`` every :data:`PROBE_EVERY_S` until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop_event = threading.Event()
        self.results: list[float | None] = []

    def run(self) -> None:
        while not self.stop_event.wait(PROBE_EVERY_S):
            self.results.append(_probe_once(self.port))


# -- orchestration ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scenario(
    kind: str, port: int, seconds: float, env: dict[str, str], outlet: object, sup: object,
    kw: dict[str, object],
) -> dict[str, float]:  # fmt: skip
    abuser = None
    if kind != "quiet":
        args = [sys.executable, __file__, "--abuser", kind, "--port", str(port)]
        abuser = fanout._Child(args, env, f"abuser {kind}")
        abuser.ready()
        time.sleep(1.0)  # let the abuse reach its steady state
    prober = Prober(port)
    prober.start()
    try:
        case = fanout._case("dpshm", 1, seconds, env, outlet, {**kw, "window": "view"}, [sup])
    finally:
        prober.stop_event.set()
        prober.join(5)
        if abuser is not None:
            abuser.stop()
    ok = [r for r in prober.results if r is not None]
    p50, p99 = percentiles(ok, 1e3) if ok else (float("nan"), float("nan"))
    return {
        "answered": len(ok) / max(1, len(prober.results)),
        "n_probes": len(prober.results),
        "probe_p50_ms": p50,
        "probe_p99_ms": p99,
        "p50_ms": case["p50_ms"],
        "p99_ms": case["p99_ms"],
        "sup_cpu": case["others_cpu"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="measurement window per scenario")
    p.add_argument(
        "--only", default=",".join(SCENARIOS[1:]),
        help="abuse scenarios, comma separated (each runs right after a quiet run)",
    )  # fmt: skip
    p.add_argument("--repeat", type=int, default=1, help="runs per scenario; medians are shown")
    p.add_argument("--abuser", choices=sorted(ABUSERS), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.abuser:
        run_abuser(a.abuser, a.port)
        return
    uid = uuid.uuid4().hex[:8]
    name = f"dpshmabuse{uid}"
    kw = {"name": name, "channels": 32, "rate": 1000.0}
    port = _free_port()
    kinds = a.only.split(",")
    runs: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="dpshm-bench-") as runtime:
        env = child_env(XDG_RUNTIME_DIR=runtime, DPSHM_NAMESPACE=f"abuse{uid}")
        outlet = fanout._Child(fanout._role_args("outlet", **kw), env, "outlet")
        sup = None
        try:
            outlet.ready()
            sup = fanout._Child([*fanout.supervisor_args(name), "--port", str(port)], env, "up")
            deadline = time.monotonic() + fanout.READY_TIMEOUT_S
            while _probe_once(port) is None:
                if time.monotonic() > deadline or sup.proc.poll() is not None:
                    raise TimeoutError(f"dpshm up did not answer UP on port {port}")
                time.sleep(0.1)
            for rep in range(a.repeat):
                for kind in kinds:  # each abuse right after its own quiet run: drifting
                    quiet = scenario("quiet", port, a.seconds, env, outlet, sup, kw)
                    abused = scenario(kind, port, a.seconds, env, outlet, sup, kw)
                    runs[kind].append((quiet, abused))
                    print(f"  {kind} ({rep + 1}/{a.repeat}): done", file=sys.stderr, flush=True)
            if _probe_once(port) is None:
                print("WARNING: the supervisor stopped answering", file=sys.stderr)
        finally:
            if sup is not None:
                sup.stop()
            outlet.stop()
    report(runs, a.seconds, a.repeat)


def _med(rows: list[dict[str, float]], key: str) -> float:
    return float(np.median([r[key] for r in rows]))


def report(runs: dict, seconds: float, repeat: int) -> None:
    """Print the table (medians over the repeats; each abuse beside its own quiet run)."""
    print(f"abuse benchmark: {seconds:g} s per run, medians of {repeat}; 32 ch @ 1 kHz, 10 ms "
          f"chunks; one consumer (1 s zero-copy window per wake); an UP; probe every "
          f"{PROBE_EVERY_S * 1e3:g} ms (1 s timeout); each abuse right after a quiet run; "
          f"supervisor CPU in % of one core")  # fmt: skip
    print()
    print("| abuse | probes answered | probe p50 / p99 | consumer p50 / p99, quiet | consumer "
          "p50 / p99, abused | p99 abused - quiet | supervisor CPU quiet / abused |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    worst_delta, worst_answered = -np.inf, 1.0
    for kind, pairs in runs.items():
        q = [p[0] for p in pairs]
        x = [p[1] for p in pairs]
        answered = min(r["answered"] for r in x + q)
        delta = _med(x, "p99_ms") - _med(q, "p99_ms")
        worst_delta, worst_answered = max(worst_delta, delta), min(worst_answered, answered)
        print(
            f"| {kind} | {100 * answered:.1f} % of {sum(r['n_probes'] for r in x)} | "
            f"{_med(x, 'probe_p50_ms'):.2f} / {_med(x, 'probe_p99_ms'):.2f} ms | "
            f"{_med(q, 'p50_ms'):.2f} / {_med(q, 'p99_ms'):.2f} ms | "
            f"{_med(x, 'p50_ms'):.2f} / {_med(x, 'p99_ms'):.2f} ms | {delta:+.2f} ms | "
            f"{_med(q, 'sup_cpu'):.0f} / {_med(x, 'sup_cpu'):.0f} % |"
        )
    met = "met" if worst_answered == 1 and worst_delta <= 1 else "NOT met"
    print(f"\ntarget: 100 % of probes answered (worst {100 * worst_answered:.1f} %), consumer "
          f"p99 within 1 ms of the quiet run (worst {worst_delta:+.2f} ms): {met}")  # fmt: skip


if __name__ == "__main__":
    main()
