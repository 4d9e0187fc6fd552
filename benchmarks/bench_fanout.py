"""Fan-out benchmark: one LSL stream read by N consumer processes (detailed table).

Runs :mod:`dpshm.bench.fanout` (the measuring code behind ``dpshm bench``)
with more choices and prints one line per stream format and N:

(a) dpshm: ``dpshm up`` + N processes calling
    ``SharedStreamView.next_window(seconds=1.0)``: a zero-copy window
    (``view``) and/or a copied one (``copy``);
    with ``--floor`` also consumers that only sleep on the doorbell and read
    nothing (``floor``): what N Python processes woken per chunk cost at least;
(b) Dareplane: N processes, each with the ORIGINAL ``dareplane_utils``
    ``StreamWatcher`` (its own LSL inlet), calling ``update()`` and copying a
    1 s window every 10 ms;

plus a single direct LSL inlet (blocking pull) as the latency reference.
CPU is user+system time of the consumers (+ the supervisor for dpshm; its share
in parentheses) in % of one core; the outlet's own CPU is shown apart.

Usage::

    python benchmarks/bench_fanout.py            # 64ch@1kHz and 256ch@2kHz, N=1,2,4,8
    python benchmarks/bench_fanout.py --quick    # 64ch@1kHz, N=1,8, short runs
    python benchmarks/bench_fanout.py --repeat 3 --wake zmq   # medians; ZeroMQ wake-ups
    python benchmarks/bench_fanout.py --window view --floor --ns 8 --repeat 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from dpshm.bench import fanout


def _median(runs: list[dict]) -> dict:
    return {
        k: float(np.median([r[k] for r in runs]))
        for k in runs[0]
        if isinstance(runs[0][k], (int, float))
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64ch@1kHz only, N=1,8, 3 s runs")
    p.add_argument("--seconds", type=float, default=None, help="measurement window per run")
    p.add_argument("--ns", default="1,2,4,8", help="consumer counts, comma separated")
    p.add_argument(
        "--window", choices=("view", "copy", "both"), default="both",
        help="dpshm consumers' windows: zero-copy, copied, or both arms (default)",
    )  # fmt: skip
    p.add_argument(
        "--wake", choices=("doorbell", "zmq"), default=None,
        help="dpshm consumers' wake path (DPSHM_WAKE); default: the platform's",
    )  # fmt: skip
    p.add_argument(
        "--floor", action="store_true",
        help="add an arm whose consumers only sleep on the doorbell and read nothing:\n"
        "the CPU floor of N Python processes woken per chunk (+ the supervisor)",
    )  # fmt: skip
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; medians are shown")
    a = p.parse_args()

    cases = [(64, 1000.0)] if a.quick else [(64, 1000.0), (256, 2000.0)]
    ns = [1, 8] if a.quick else [int(x) for x in a.ns.split(",")]
    seconds = a.seconds or (3.0 if a.quick else 6.0)
    windows = fanout.WINDOWS if a.window == "both" else (a.window,)
    windows += (fanout.FLOOR,) if a.floor else ()
    print(f"fan-out benchmark: {seconds:g} s per run, 10 ms chunks, 1 s window per wake/10 ms")
    print(f"dpshm wake path: {a.wake or 'default'}; medians of {a.repeat} run(s); CPU in % of one "
          f"core (dpshm: supervisor share in ()); ratio = dpshm / dareplane")  # fmt: skip
    print(f"machine: {psutil.cpu_count()} cores, python {sys.version.split()[0]}")
    print("outlet CPU%: with the first dpshm arm / with the dareplane consumers\n")
    arms = [(fanout.ARM_KEYS[w], w) for w in windows]
    hdr = f"{'stream':<12} {'N':>2} | " + "".join(
        f"{w + ' CPU% (sup)':>18} {'ratio':>6} {w + ' p50/p99 ms':>17} | " for _, w in arms
    )
    hdr += f"{'dareplane CPU%':>14} {'p50/p99 ms':>13} | {'direct p50/p99':>15} | outlet CPU%"
    print(hdr)
    print("-" * len(hdr))
    for ch, rate in cases:
        for n in ns:
            runs = [
                fanout.run(ch, rate, [n], seconds, windows, a.wake, mnelsl=False)
                for _ in range(a.repeat)
            ]
            b = _median([r["dareplane"][n] for r in runs])
            direct = _median([r["direct"] for r in runs])
            line = f"{fanout.config_tag(ch, rate):<12} {n:>2} | "
            outlet = [_median([r[arms[0][0]][n] for r in runs])["outlet_cpu"]] if arms else []
            for key, _ in arms:
                d = _median([r[key][n] for r in runs])
                line += (
                    f"{d['cpu']:>11.1f} ({d['others_cpu']:>4.1f}) {d['cpu'] / b['cpu']:>6.2f} "
                    f"{d['p50_ms']:>8.2f}/{d['p99_ms']:<8.2f} | "
                )
            line += (
                f"{b['cpu']:>14.1f} {b['p50_ms']:>6.2f}/{b['p99_ms']:<6.2f} | "
                f"{direct['p50_ms']:>6.2f}/{direct['p99_ms']:<8.2f} | "
                + "/".join(f"{x:.1f}" for x in [*outlet, b["outlet_cpu"]])
            )
            print(line, flush=True)


if __name__ == "__main__":
    main()
