"""The ``dpshm bench`` sub-command."""

from __future__ import annotations

import argparse
import os
import sys
import time


def add_command(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the ``dpshm`` parser."""
    p = sub.add_parser(
        "bench",
        help="measure dpshm against its baselines on this machine and print one table",
        description="Run the benchmark suite: fan-out CPU (supervisor + SharedStreamView vs "
        "one LSL inlet per consumer), outlet-to-consumer latency (vs a direct LSL inlet), "
        "unfold_buffer()/get_window() (vs a plain copy and the original StreamWatcher), "
        "EventLoop period error and CPU, and the UP round trip (vs dareplane-utils); "
        "mne-lsl's StreamLSL as a further fan-out baseline when installed. A few headline "
        "lines first answer how much dpshm saves here; then every figure beside its "
        "baseline, measured in the same run, with the ratio dpshm/baseline. A warning "
        "says when the machine's load makes the run unreliable. Baselines from "
        "dareplane-utils and mne-lsl need: pip install 'dpshm[bench]'.",
        epilog="The full suite takes about 3 minutes; close other programs for steadier "
        "figures. See docs/performance.md.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="every row kind, fewer consumer counts (N=1,4) and shorter runs (about a minute)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw fan-out CPU and latency against N (needs: pip install 'dpshm[plot]')",
    )
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from dpshm.bench import report, suite
    from dpshm.errors import ConfigError

    if args.plot:
        try:
            report.require_matplotlib()  # fail before minutes of measuring
        except ConfigError as exc:
            print(f"dpshm bench: error: {exc}", file=sys.stderr)
            return 2
    meta = report.machine()
    plan = suite.plan(args.quick)
    meta["quick"] = plan.quick
    t0 = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - t0:5.1f} s] {msg} ...", file=sys.stderr, flush=True)

    rows, raw = suite.run(plan, progress)
    meta["duration_s"] = round(time.monotonic() - t0, 1)
    meta["loadavg_1min_after"] = os.getloadavg()[0]
    warning = report.load_warning(meta["loadavg_1min"], meta["loadavg_1min_after"], meta["cores"])
    meta["load_warning"] = warning
    for line in report.headline(rows):
        print(line)
    if warning:
        print(warning)
    print()
    print(
        f"dpshm bench{' --quick' if plan.quick else ''}: {meta['cores']} cores, {meta['cpu']}, "
        f"Python {meta['python']}, pylsl {meta['pylsl']}, dareplane-utils "
        f"{meta['dareplane-utils'] or 'not installed'}, mne-lsl "
        f"{meta['mne-lsl'] or 'not installed'}, load {meta['loadavg_1min']:.2f} before, "
        f"{meta['loadavg_1min_after']:.2f} after; ratio = dpshm / baseline"
    )
    print(report.table(rows), flush=True)
    if args.json:
        report.write_json(args.json, rows, meta, raw)
        print(f"raw results: {args.json}")
    if args.plot:
        report.plot(args.plot, raw, meta)
        print(f"plot: {args.plot}")
    return 0
