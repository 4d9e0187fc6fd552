"""Benchmark: the log server under abusive clients, dpshm vs dareplane-utils 0.0.24.

Run: ``python benchmarks/bench_logserver.py [--idle 500] [--half 10] [--half-mb 8]``

Each receiver runs in its own process (dpshm's ``LogRecordSocketReceiver``
with its default limits, and the original ``dareplane_utils.logging.server``
one; ``dpshm-32M`` is dpshm's with ``max_record_bytes`` raised to 32 MiB, so
that half-sent records are held and ``max_buffered_bytes`` (32 MiB) bounds
them). For each situation the receiver's threads and resident memory are read
with psutil, and a probe record is sent on a fresh connection: written or not
within 5 s, and how long it took to appear in the log file.

1. quiet: nothing else connected;
2. ``--idle`` connections that never send a byte;
3. ``--half`` connections that each announce a 16 MiB record and send
   ``--half-mb`` MiB of it, then stall.

Not a timed test: the figures depend on the machine; compare the rows of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

RECEIVERS = {
    "dpshm": (
        "import sys\nfrom dpshm.dareplane.logserver import LogRecordSocketReceiver\n"
        "r = LogRecordSocketReceiver('127.0.0.1', 0, sys.argv[1], console=False)\n"
        "print(r.port, flush=True)\nr.serve_until_stopped()\n"
    ),
    # records up to 32 MiB allowed: the partial ones are bounded by max_buffered_bytes
    "dpshm-32M": (
        "import sys\nfrom dpshm.dareplane.logserver import LogRecordSocketReceiver\n"
        "r = LogRecordSocketReceiver('127.0.0.1', 0, sys.argv[1], console=False,\n"
        "                            max_record_bytes=32 << 20)\n"
        "print(r.port, flush=True)\nr.serve_until_stopped()\n"
    ),
    "original": (
        "import sys\nfrom pathlib import Path\n"
        "from dareplane_utils.logging.server import LogRecordSocketReceiver\n"
        "r = LogRecordSocketReceiver('127.0.0.1', 0, logfile=Path(sys.argv[1]))\n"
        "sys.__stdout__.write(f'{r.server_address[1]}\\n'); sys.__stdout__.flush()\n"
        "r.serve_until_stopped()\n"
    ),
}


def _frame(msg: str) -> bytes:
    body = json.dumps(
        {
            "name": "bench.probe",
            "msg": msg,
            "args": [],
            "levelname": "INFO",
            "levelno": 20,
            "created": time.time(),
            "msecs": 0.0,
            "relativeCreated": 0.0,
        }
    ).encode()
    return struct.pack(">L", len(body)) + body


def _probe(port: int, logfile: Path, tag: str, timeout: float = 5.0) -> float | None:
    """Seconds until a probe record appears in the log file; None if it never does."""
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(_frame(f"probe {tag}"))
            while time.perf_counter() - t0 < timeout:
                if logfile.exists() and f"probe {tag}" in logfile.read_text(errors="replace"):
                    return time.perf_counter() - t0
                time.sleep(0.002)
    except OSError:
        return None
    return None


def _state(proc: psutil.Process) -> tuple[int, float]:
    return proc.num_threads(), proc.memory_info().rss / 2**20


def run(kind: str, idle: int, half: int, half_mb: int) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        logfile = Path(tmp) / "bench.log"
        proc = subprocess.Popen(
            [sys.executable, "-c", RECEIVERS[kind], str(logfile)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            port = int(proc.stdout.readline())
            ps = psutil.Process(proc.pid)
            rows.append((kind, "quiet", *_state(ps), _probe(port, logfile, "quiet")))
            socks: list[socket.socket] = []
            try:
                for _ in range(idle):
                    socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                time.sleep(0.5)
                rows.append((kind, f"{idle} idle", *_state(ps), _probe(port, logfile, "idle")))
            finally:
                for s in socks:
                    s.close()
            socks = []
            chunk = b"x" * (1 << 20)
            try:
                for _ in range(half):
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    socks.append(s)
                    with contextlib.suppress(OSError):
                        s.sendall(struct.pack(">L", 16 << 20))
                        for _ in range(half_mb):
                            s.sendall(chunk)
                time.sleep(1.0)
                rows.append(
                    (
                        kind,
                        f"{half} x {half_mb} MiB half",
                        *_state(ps),
                        _probe(port, logfile, "half"),
                    )
                )
            finally:
                for s in socks:
                    s.close()
        finally:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--idle", type=int, default=500)
    ap.add_argument("--half", type=int, default=10)
    ap.add_argument("--half-mb", type=int, default=8)
    a = ap.parse_args()
    print(f"{'receiver':<10} {'situation':<22} {'threads':>7} {'RSS MB':>7} {'probe':>10}")
    for kind in RECEIVERS:
        for k, what, threads, rss, lat in run(kind, a.idle, a.half, a.half_mb):
            probe = "lost" if lat is None else f"{lat * 1e3:.1f} ms"
            print(f"{k:<10} {what:<22} {threads:>7} {rss:>7.1f} {probe:>10}")


if __name__ == "__main__":
    main()
