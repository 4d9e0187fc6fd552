"""StreamWatcher.update() and unfold_buffer(): dpshm vs the original dareplane-utils.

Run: ``PYTHONPATH=. python benchmarks/bench_watcher.py``

The ring-buffer figures at the end come from :mod:`dpshm.bench.copies` (the
copy rows of ``dpshm bench``).

Both watchers read the same loopback LSL outlet (64 channels, float32, 1 kHz
nominal, 5 s buffer). Figures are medians (and p90) over many calls, measured
interleaved in one run; ratios are ours / original (< 1 = we are faster). The
plain ``np.copy`` of a contiguous 5000 x 64 array is the floor for unfold.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid

import numpy as np

N_CH, SRATE, BUF_S = 64, 1000.0, 5


def stats(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1e6
    return float(np.median(a)), float(np.percentile(a, 90))


def time_call(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def row(label: str, ours: list[float], orig: list[float]) -> None:
    (m1, p1), (m2, p2) = stats(ours), stats(orig)
    print(f"{label:<34} {m1:9.1f} {p1:9.1f} {m2:9.1f} {p2:9.1f} {m1 / m2:7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=300, help="calls per figure")
    ap.add_argument("--chunk", type=int, default=10, help="rows per pushed chunk")
    args = ap.parse_args()

    from dpshm.bench import copies
    from dpshm.bench._common import import_original
    from dpshm.dareplane.watcher import StreamWatcher
    from dpshm.lsl import Outlet

    mod = import_original("dareplane_utils.stream_watcher.lsl_stream_watcher")
    if mod is None:
        raise SystemExit("the original needs dareplane-utils: pip install 'dpshm[bench]'")
    OrigSW = mod.StreamWatcher

    silent = logging.Logger("silent", level=logging.CRITICAL)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    chunk = rng.standard_normal((args.chunk, N_CH)).astype(np.float32)

    print(
        f"{'figure (us per call)':<34} {'ours':>9} {'ours p90':>9} {'orig':>9} "
        f"{'orig p90':>9} {'ratio':>7}"
    )
    with Outlet(name, "EEG", N_CH, SRATE, "float32", name) as out:
        ours = StreamWatcher(name, buffer_size_s=BUF_S, resolve_timeout=5.0)
        ours.connect_to_stream()
        orig = OrigSW(name, buffer_size_s=BUF_S)
        orig.logger = silent
        orig.connect_to_stream()
        orig.ring_buffer.logger = silent
        try:
            # fill both rings once so the unfold figures copy real data
            for _ in range(int(SRATE * BUF_S) // 500):  # exactly one buffer: nothing clipped
                out.push_chunk(rng.standard_normal((500, N_CH)).astype(np.float32))
            deadline = time.monotonic() + 10
            while (ours.ring_buffer.head < SRATE * BUF_S) and time.monotonic() < deadline:
                ours.update()
                orig.update()
                ours.n_new = orig.n_new = 0  # read, as a consumer would (no clipping warning)
                time.sleep(0.01)
            orig.update()

            t_ours, t_orig = [], []
            for i in range(args.reps):
                ours.n_new = orig.n_new = 0  # a consumer resets n_new after reading
                out.push_chunk(chunk)
                deadline = time.monotonic() + 2
                while (
                    ours.inlet.samples_available() == 0 or orig.inlet.samples_available() == 0
                ) and time.monotonic() < deadline:
                    time.sleep(0.0005)
                # alternate who goes first: the first call after a sleep runs cold
                if i % 2:
                    t_ours += time_call(ours.update, 1)
                    t_orig += time_call(orig.update, 1)
                else:
                    t_orig += time_call(orig.update, 1)
                    t_ours += time_call(ours.update, 1)
            row(f"update() with {args.chunk} new rows", t_ours, t_orig)
            row(
                "update() with nothing queued",
                time_call(ours.update, args.reps * 5),
                time_call(orig.update, args.reps * 5),
            )
            row(
                "StreamWatcher.unfold_buffer()",
                time_call(ours.unfold_buffer, args.reps),
                time_call(orig.unfold_buffer, args.reps),
            )
        finally:
            ours.disconnect()
            orig.disconnect()

    # ring-buffer copies: the measuring code of `dpshm bench` (best-of timings)
    print(f"\n{'figure (us per call, best of 5)':<44} {'ours':>9} {'baseline':>9} {'ratio':>7}")
    for r in copies.measure(N_CH, SRATE, BUF_S):
        if r.key.startswith("watcher_"):
            base = "-" if r.baseline is None else f"{r.baseline:9.1f}"
            ratio = "-" if r.ratio is None else f"{r.ratio:7.2f}"
            print(f"{r.label:<44} {r.value:9.1f} {base:>9} {ratio:>7}  {r.needs or ''}")


if __name__ == "__main__":
    main()
