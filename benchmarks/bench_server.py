"""Benchmark: command round trip and log-call cost, dpshm vs dareplane-utils 0.0.24.

Run: ``PYTHONPATH=. python benchmarks/bench_server.py [--n 1000]``

1. ``UP`` -> ``1`` round trip (p50/p99 over ``--n`` calls after a warm-up), one
   client per server, each server in its own subprocess (the original
   configures the root logger on import); calls to the two servers alternate so
   that load from other processes hits both alike.
2. One ``logger.info`` call with no log receiver listening, through our
   ``JsonSocketHandler`` and the original ``UJsonSocketHandler``.

Figures are printed beside the original's, as ratios (ours / original).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import logging.handlers
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dpshm.logs import JsonSocketHandler
from dpshm.procs import stop_process_tree

ROOT = Path(__file__).resolve().parents[1]

SERVERS = {
    "dpshm": "from dpshm.server import DefaultServer",
    "dareplane-utils": "from dareplane_utils.default_server.server import DefaultServer",
}
SERVE = r"""
{imp}
srv = DefaultServer(0, ip="127.0.0.1", name="bench")
srv.init_server()
print(srv.server_socket.getsockname()[1], flush=True)
srv.start_listening()
srv.shutdown()
"""


class _Peer:
    """A server subprocess plus one connected client socket."""

    def __init__(self, imp: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE.format(imp=imp)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        port = int(self.proc.stdout.readline())
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        banner = b""
        while not banner.endswith(b"\n"):
            banner += self.sock.recv(100)

    def up(self, msg: bytes) -> float:
        t0 = time.perf_counter()
        self.sock.sendall(msg)
        if self.sock.recv(1) != b"1":
            raise RuntimeError("unexpected reply")
        return time.perf_counter() - t0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"CLOSE;")
        self.sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc.stdout.close()
        stop_process_tree(self.proc, grace_s=1)


def bench_up(n: int) -> dict[str, np.ndarray]:
    """Interleave calls to both servers so machine noise hits both alike."""
    peers = {name: _Peer(imp) for name, imp in SERVERS.items()}
    cases = [("dpshm", b"UP;"), ("dareplane-utils", b"UP;"), ("dpshm", b"UP")]
    res = {f"{name} {msg!r}": np.empty(n) for name, msg in cases}
    try:
        for i in range(-50, n):
            order = cases if i % 2 else cases[::-1]
            for name, msg in order:
                dt = peers[name].up(msg)
                if i >= 0:
                    res[f"{name} {msg!r}"][i] = dt
    finally:
        for p in peers.values():
            p.close()
    return res


def bench_log_call(n: int) -> dict[str, np.ndarray]:
    from dareplane_utils.logging.ujson_socket_handler import UJsonSocketHandler

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here after the with-block
    res = {}
    handlers = {
        "dpshm": JsonSocketHandler("127.0.0.1", port),
        "dareplane-utils": UJsonSocketHandler("127.0.0.1", port),
    }
    for name, h in handlers.items():
        log = logging.getLogger(f"bench.{name}")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(h)
        out = np.empty(n)
        for i in range(n):
            t0 = time.perf_counter()
            log.info("sample %d of %s", i, "bench")
            out[i] = time.perf_counter() - t0
        log.removeHandler(h)
        h.close()
        res[name] = out
    return res


def _row(label: str, ours: np.ndarray, theirs: np.ndarray | None, unit: float, u: str) -> None:
    po, qo = np.percentile(ours, [50, 99]) / unit
    if theirs is None:
        print(f"| {label} | {po:.1f} / {qo:.1f} {u} | n/a (not answered) | n/a |")
        return
    pt, qt = np.percentile(theirs, [50, 99]) / unit
    ratio = f"{po / pt:.2f} / {qo / qt:.2f}"
    print(f"| {label} | {po:.1f} / {qo:.1f} {u} | {pt:.1f} / {qt:.1f} {u} | {ratio} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    a = ap.parse_args()
    up = bench_up(a.n)
    logs = bench_log_call(a.n)
    print("| measure (p50 / p99) | dpshm | dareplane-utils 0.0.24 | ratio ours/original |")
    print("|---|---|---|---|")
    ours, theirs = up["dpshm b'UP;'"], up["dareplane-utils b'UP;'"]
    _row("`UP;` -> `1` round trip", ours, theirs, 1e-6, "µs")
    _row("`UP` unterminated -> `1`", up["dpshm b'UP'"], None, 1e-6, "µs")
    _row("log call, no receiver", logs["dpshm"], logs["dareplane-utils"], 1e-6, "µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
