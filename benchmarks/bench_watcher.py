"""StreamWatcher.update() and unfold_buffer(): dpshm vs the original dareplane-utils.

Run: ``PYTHONPATH=. python benchmarks/bench_watcher.py``

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

    from dareplane_utils.general.ringbuffer import RingBuffer as OrigRing
    from dareplane_utils.stream_watcher.lsl_stream_watcher import StreamWatcher as OrigSW

    from dpshm.lsl import Outlet
    from dpshm.ringbuffer import RingBuffer
    from dpshm.watcher import StreamWatcher

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
            for _ in range(int(SRATE * BUF_S) // 500 + 1):
                out.push_chunk(rng.standard_normal((500, N_CH)).astype(np.float32))
            deadline = time.monotonic() + 10
            while (ours.ring_buffer.head < SRATE * BUF_S) and time.monotonic() < deadline:
                ours.update()
                orig.update()
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

    shape = (int(SRATE * BUF_S), N_CH)
    rb, ob = RingBuffer(shape), OrigRing(shape)
    ob.logger = silent
    data = rng.standard_normal((shape[0] + 1234, N_CH)).astype(np.float32)
    times = np.arange(len(data), dtype=np.float64)
    rb.add_samples(data, times)
    ob.add_samples(data, times)
    assert np.array_equal(rb.unfold_buffer(), ob.unfold_buffer())
    plain = np.ascontiguousarray(data[: shape[0]])
    row(
        "RingBuffer.unfold_buffer() 64x5000",
        time_call(rb.unfold_buffer, args.reps * 3),
        time_call(ob.unfold_buffer, args.reps * 3),
    )
    row(
        "  baseline np.copy(5000x64) vs orig",
        time_call(plain.copy, args.reps * 3),
        time_call(ob.unfold_buffer, args.reps * 3),
    )
    row(
        "RingBuffer.view() (zero-copy)",
        time_call(rb.view, args.reps * 3),
        time_call(ob.unfold_buffer, args.reps * 3),
    )
    row(
        f"RingBuffer.add_samples({args.chunk} rows)",
        time_call(lambda: rb.add_samples(chunk, times[: args.chunk]), args.reps * 3),
        time_call(lambda: ob.add_samples(chunk, times[: args.chunk]), args.reps * 3),
    )


if __name__ == "__main__":
    main()
