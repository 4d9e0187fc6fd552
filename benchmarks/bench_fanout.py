"""Fan-out benchmark: one LSL stream read by N consumer processes.

The detailed table behind the fan-out and latency rows of ``dpshm bench``; the
measuring code (roles, orchestration, method) is :mod:`dpshm.bench.fanout`:
(a) dpshm: ``dpshm up`` + N ``SharedStreamView`` processes; (b) N processes
with the ORIGINAL dareplane-utils ``StreamWatcher`` (one LSL inlet each); and
one direct LSL inlet as the latency reference. CPU in % of one core
(consumers, + supervisor for dpshm); the outlet's own CPU is shown apart.

Usage::

    python benchmarks/bench_fanout.py            # 64ch@1kHz and 256ch@2kHz, N=1,2,4,8
    python benchmarks/bench_fanout.py --quick    # 64ch@1kHz, N=1,8, short runs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from dpshm.bench import fanout


def _lat(case: dict | None) -> str:
    return "-" if case is None else f"{case['p50_ms']:.2f}/{case['p99_ms']:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64ch@1kHz only, N=1,8, 3 s runs")
    p.add_argument("--seconds", type=float, default=None, help="measurement window per run")
    p.add_argument("--ns", default="1,2,4,8", help="consumer counts, comma separated")
    a = p.parse_args()
    cases = [(64, 1000.0)] if a.quick else [(64, 1000.0), (256, 2000.0)]
    ns = [1, 8] if a.quick else [int(x) for x in a.ns.split(",")]
    seconds = a.seconds or (3.0 if a.quick else 6.0)
    print(f"fan-out benchmark: {seconds:g} s per run, 10 ms chunks, 1 s window per wake/10 ms")
    print(f"machine: {psutil.cpu_count()} cores, python {sys.version.split()[0]}\n")
    hdr = (
        f"{'stream':<12} {'N':>2} | {'dpshm CPU%':>10} {'dareplane CPU%':>14} {'ratio':>6} | "
        f"{'dpshm p50/p99 ms':>17} {'dareplane p50/p99':>18} {'direct p50/p99':>15} | "
        f"{'outlet CPU% dpshm/dp':>20}"
    )
    print(hdr)
    print("-" * len(hdr))
    for ch, rate in cases:
        res = fanout.run(ch, rate, ns, seconds)
        for n in ns:
            r_a, r_b = res["dpshm"].get(n), res["dareplane"].get(n)
            cpu_a = "-" if r_a is None else f"{r_a['cpu']:.1f}"
            cpu_b = "-" if r_b is None else f"{r_b['cpu']:.1f}"
            ratio = "-" if r_a is None or r_b is None else f"{r_a['cpu'] / r_b['cpu']:.2f}"
            out_a = "-" if r_a is None else f"{r_a['outlet_cpu']:.1f}"
            out_b = "-" if r_b is None else f"{r_b['outlet_cpu']:.1f}"
            print(
                f"{fanout.config_tag(ch, rate):<12} {n:>2} | {cpu_a:>10} {cpu_b:>14} {ratio:>6} | "
                f"{_lat(r_a):>17} {_lat(r_b):>18} {_lat(res['direct']):>15} | "
                f"{out_a:>9}/{out_b:<10}",
                flush=True,
            )


if __name__ == "__main__":
    main()
