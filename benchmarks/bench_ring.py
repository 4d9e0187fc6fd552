"""Benchmark of the shared-memory ring against plain numpy copies measured in the same run.

    python benchmarks/bench_ring.py [--repeat 7]

For 64 ch float32 x 5 s at 1 kHz and 256 ch x 5 s at 2 kHz it prints the copy
rows of ``dpshm bench`` (measuring code: :mod:`dpshm.bench.copies`): writing a
10 ms chunk (baseline: copying it twice, i.e. row + mirror), ``get_window``
zero-copy (numpy slice) and copying (``np.copy``), ``unfold_buffer()``
(``np.copy`` of the same bytes) and, when dareplane-utils is installed, the
original StreamWatcher/RingBuffer. Each figure is the best of ``--repeat``
runs; ratios are to the baseline, with the project's targets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from dpshm.bench import copies

TARGETS = {"ring_write": "<= 3x", "unfold_buffer": "<= 1.5x", "get_window_view": "< 20 us"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for n_ch, srate in ((64, 1000.0), (256, 2000.0)):
        print(f"\n{n_ch} ch float32 x 5 s at {srate:g} Hz ({n_ch * srate * 5 * 4 / 2**20:.2f} MiB)")
        print(f"{'operation':52s} {'us':>8s}   {'baseline':46s} {'us':>8s} {'ratio':>6s}  target")
        for r in copies.measure(n_ch, srate, 5.0, repeat=args.repeat):
            base = "-" if r.baseline is None else f"{r.baseline:8.2f}"
            ratio = "-" if r.ratio is None else f"{r.ratio:6.2f}"
            print(
                f"{r.label:52s} {r.value:8.2f}   {r.baseline_label:46s} {base:>8s} {ratio:>6s}  "
                f"{TARGETS.get(r.key, r.needs or '')}"
            )


if __name__ == "__main__":
    main()
