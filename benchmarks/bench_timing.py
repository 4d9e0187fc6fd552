"""Benchmark dpshm's EventLoop and sleep_s against dareplane-utils' originals.

Run: ``python benchmarks/bench_timing.py [--quick] [--seconds S]``

The detailed table behind the EventLoop rows of ``dpshm bench``; the measuring
code is :mod:`dpshm.bench.loop` (see there for the method: interleaved ~1 s
rounds, mean period error, p99 of ``|interval - dt|``, CPU and overhead).
Adds ``sleep_s`` (1, 5, 10 ms) with plain ``time.sleep`` as the no-spin floor.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from dpshm.bench.loop import bench_loop, bench_sleep, implementations
from dpshm.dareplane import timing
from dpshm.dareplane.timing import get_spin_margin, set_spin_quantile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 s per case instead of 10 s")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per case")
    ap.add_argument(
        "--quantile", type=float, default=None, help="spin quantile (set_spin_quantile) for ours"
    )
    args = ap.parse_args()
    if args.quantile is not None:
        set_spin_quantile(args.quantile)
    loops, sleeps = implementations()
    if "orig" not in loops:
        sys.exit("the originals need dareplane-utils: pip install 'dpshm[bench]'")
    total = args.seconds or (1.0 if args.quick else 10.0)
    print(
        f"# {total:g} s per implementation and case, interleaved in ~1 s rounds; "
        f"spin quantile {timing._ESTIMATOR.quantile}; load average {os.getloadavg()[0]:.2f}"
    )
    print("## EventLoop: mean period error, p99 |period - dt|, CPU (ovh = CPU minus callback work)")
    hdr = (
        f"{'case':<20}{'ours err':>10}{'p99':>8}{'cpu%':>7}{'ovh%':>7}"
        f"{'orig err':>10}{'p99':>8}{'cpu%':>7}{'ovh%':>7}{'cpu ratio':>11}{'ovh ratio':>11}"
    )
    print(hdr + "\n" + "-" * len(hdr))
    for dt in (0.001, 0.010):
        for work in (0.0, 0.0005):
            r = bench_loop(dt, work, total, loops)
            o, g = r["ours"], r["orig"]
            case = f"dt={dt * 1e3:g}ms {'busy0.5ms' if work else 'idle'}"
            print(
                f"{case:<20}{o['err_us']:>+8.1f}us{o['p99_us']:>6.0f}us{o['cpu']:>7.1f}"
                f"{o['ovh']:>7.1f}{g['err_us']:>+8.1f}us{g['p99_us']:>6.0f}us{g['cpu']:>7.1f}"
                f"{g['ovh']:>7.1f}{o['cpu'] / g['cpu']:>11.2f}{o['ovh'] / g['ovh']:>11.2f}"
            )
    print("\n## sleep_s: mean overshoot, p99 overshoot, CPU (time.sleep = no-spin floor)")
    hdr = (
        f"{'case':<12}{'ours mean':>11}{'p99':>8}{'cpu%':>7}{'orig mean':>11}{'p99':>8}"
        f"{'cpu%':>7}{'sleep mean':>12}{'p99':>8}{'cpu%':>7}{'cpu ratio':>11}"
    )
    print(hdr + "\n" + "-" * len(hdr))
    for s in (0.001, 0.005, 0.010):
        r = bench_sleep(s, total, sleeps)
        o, g, b = r["ours"], r["orig"], r["time.sleep"]
        print(
            f"{f's={s * 1e3:g}ms':<12}{o['err_us']:>9.1f}us{o['p99_us']:>6.0f}us{o['cpu']:>7.1f}"
            f"{g['err_us']:>9.1f}us{g['p99_us']:>6.0f}us{g['cpu']:>7.1f}"
            f"{b['err_us']:>10.1f}us{b['p99_us']:>6.0f}us{b['cpu']:>7.1f}"
            f"{o['cpu'] / g['cpu']:>11.2f}"
        )
    margins = ", ".join(
        f"{s * 1e3:g} ms: {get_spin_margin(s) * 1e6:.0f} us" for s in (1e-3, 5e-3, 1e-2)
    )
    print(f"\nlearned spin margins after the run: {margins}")


if __name__ == "__main__":
    main()
