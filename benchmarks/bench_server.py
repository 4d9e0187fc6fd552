"""Benchmark: command round trip and log-call cost, dpshm vs dareplane-utils 0.0.24.

Run: ``PYTHONPATH=. python benchmarks/bench_server.py [--n 1000]``

1. ``UP`` -> ``1`` round trip (p50/p99 over ``--n`` calls after a warm-up), one
   client, each server in its own subprocess (the original configures the root
   logger on import), measured by the same client code in this process.
2. One ``logger.info`` call with no log receiver listening, through our
   ``JsonSocketHandler`` and the original ``UJsonSocketHandler``.

Figures are printed beside the original's, as ratios (ours / original).
"""

from __future__ import annotations

import argparse
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


def _round_trips(port: int, n: int, msg: bytes) -> np.ndarray:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        banner = b""
        while not banner.endswith(b"\n"):
            banner += s.recv(100)
        out = np.empty(n)
        for i in range(-50, n):
            t0 = time.perf_counter()
            s.sendall(msg)
            if s.recv(1) != b"1":
                raise RuntimeError("unexpected reply")
            if i >= 0:
                out[i] = time.perf_counter() - t0
        s.sendall(b"CLOSE;")
    return out


def bench_up(n: int) -> dict[str, dict[str, np.ndarray]]:
    res: dict[str, dict[str, np.ndarray]] = {}
    for name, imp in SERVERS.items():
        p = subprocess.Popen(
            [sys.executable, "-c", SERVE.format(imp=imp)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            port = int(p.stdout.readline())
            res[name] = {"UP;": _round_trips(port, n, b"UP;")}
            p.wait(10)
            if name == "dpshm":  # unterminated (0.0.21/netcat style): idle dispatch
                p2 = subprocess.Popen(
                    [sys.executable, "-c", SERVE.format(imp=imp)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                try:
                    port2 = int(p2.stdout.readline())
                    res[name]["UP (unterminated)"] = _round_trips(port2, min(n, 200), b"UP")
                    p2.wait(10)
                finally:
                    p2.stdout.close()
                    stop_process_tree(p2, grace_s=1)
        finally:
            p.stdout.close()
            stop_process_tree(p, grace_s=1)
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
    _row("`UP;` -> `1` round trip", up["dpshm"]["UP;"], up["dareplane-utils"]["UP;"], 1e-6, "µs")
    _row("`UP` unterminated -> `1`", up["dpshm"]["UP (unterminated)"], None, 1e-6, "µs")
    _row("log call, no receiver", logs["dpshm"], logs["dareplane-utils"], 1e-6, "µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
