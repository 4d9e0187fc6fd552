"""Benchmark: command round trip and log-call cost, dpshm vs dareplane-utils 0.0.24.

Run: ``python benchmarks/bench_server.py [--n 1000]``

1. ``UP`` -> ``1`` round trip (p50/p99 over ``--n`` calls after a warm-up): the
   measuring code is :mod:`dpshm.bench.roundtrip` (the ``UP`` rows of
   ``dpshm bench``); here also the unterminated ``UP`` that only dpshm answers.
2. One ``logger.info`` call with no log receiver listening, through our
   ``JsonSocketHandler`` and the original ``UJsonSocketHandler``.

Figures are printed beside the original's, as ratios (ours / original).
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers  # the original handler module uses it without importing it
import socket
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from dpshm.bench._common import import_original, percentiles
from dpshm.bench.roundtrip import bench_up
from dpshm.dareplane.logs import JsonSocketHandler


def bench_log_call(n: int) -> dict[str, np.ndarray]:
    mod = import_original("dareplane_utils.logging.ujson_socket_handler")
    if mod is None:
        sys.exit("the original needs dareplane-utils: pip install 'dpshm[bench]'")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here after the with-block
    res = {}
    handlers = {
        "dpshm": JsonSocketHandler("127.0.0.1", port),
        "dareplane-utils": mod.UJsonSocketHandler("127.0.0.1", port),
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


def _row(label: str, ours: np.ndarray, theirs: np.ndarray | None) -> None:
    po, qo = percentiles(ours, 1e6)
    if theirs is None:
        print(f"| {label} | {po:.1f} / {qo:.1f} µs | n/a (not answered) | n/a |")
        return
    pt, qt = percentiles(theirs, 1e6)
    ratio = f"{po / pt:.2f} / {qo / qt:.2f}"
    print(f"| {label} | {po:.1f} / {qo:.1f} µs | {pt:.1f} / {qt:.1f} µs | {ratio} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    a = ap.parse_args()
    up = bench_up(a.n, [("dpshm", b"UP;"), ("dareplane-utils", b"UP;"), ("dpshm", b"UP")])
    logs = bench_log_call(a.n)
    print("| measure (p50 / p99) | dpshm | dareplane-utils 0.0.24 | ratio ours/original |")
    print("|---|---|---|---|")
    _row("`UP;` -> `1` round trip", up["dpshm UP;"], up["dareplane-utils UP;"])
    _row("`UP` unterminated -> `1`", up["dpshm UP"], None)
    _row("log call, no receiver", logs["dpshm"], logs["dareplane-utils"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
