"""dpshm ring demo: one writer process, several SharedStreamView readers.

    python examples/ring_demo.py [--seconds 5] [--channels 64] [--srate 1000] [--readers 2]

The writer creates a shared-memory ring and streams synthetic data (channel
``c`` of sample ``i`` is ``sin(2*pi*10 Hz*i/srate) + c``) in 10 ms chunks; each
reader prints one status line per second. Afterwards every process exits and
the ring is unlinked, also on Ctrl-C (exit code 130 then, 0 otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import time

import numpy as np

from dpshm.errors import RingNotFoundError
from dpshm.shm.ring import SharedRing, unlink_ring
from dpshm.shm.view import SharedStreamView

CHUNK_S = 0.010


def synthetic(start: int, k: int, n_ch: int, srate: float) -> np.ndarray:
    """Samples ``start .. start + k`` of the demo signal, shape ``(k, n_ch)``, float32."""
    idx = np.arange(start, start + k)
    wave = np.sin(2 * np.pi * 10.0 * idx / srate)
    return (wave[:, None] + np.arange(n_ch)).astype(np.float32)


def writer(name: str, n_ch: int, srate: float, capacity: int, ready, stop) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process coordinates shutdown
    chunk = max(1, round(srate * CHUNK_S))
    t0 = time.perf_counter()
    meta = {"t0": t0}  # readers recover sample indices from the timestamps
    with SharedRing.create(name, n_ch, capacity, "float32", srate=srate, meta=meta) as ring:
        ready.set()
        i = 0
        while not stop.is_set():
            ring.write(synthetic(i, chunk, n_ch, srate), t0 + np.arange(i, i + chunk) / srate)
            i += chunk
            delay = t0 + i / srate - time.perf_counter()  # absolute deadlines: no drift
            if delay > 0:
                stop.wait(delay)


def reader(name: str, number: int, stop, attached, results) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    received = wrong = 0
    with SharedStreamView(name) as sv:
        t0, first_head = sv.meta["t0"], sv.head
        attached.put(number)
        next_print = time.monotonic() + 1.0
        while not stop.is_set():
            data, ts, _ = sv.read_new()
            if len(data):
                start = round((ts[0] - t0) * sv.srate)
                expected = synthetic(start, len(data), sv.n_channels, sv.srate)
                wrong += int(not np.allclose(data, expected, atol=1e-5))
                received += len(data)
            if time.monotonic() >= next_print:
                next_print += 1.0
                newest = sv.get_window(1)[0]
                value = float(newest[-1, 0]) if len(newest) else float("nan")
                print(
                    f"reader {number}: received {received:7d}  lost {sv.lost_samples:5d}  "
                    f"newest ch_1 {value:+.3f}  head {sv.head:7d}  bad chunks {wrong}",
                    flush=True,
                )
            stop.wait(CHUNK_S)  # no supervisor rings a doorbell here: look once per chunk
        data, _, _ = sv.read_new()
        received += len(data)
        results.put((number, received, sv.lost_samples, first_head, wrong))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="run time (default 5)")
    parser.add_argument("--channels", type=int, default=64, help="channels (default 64)")
    parser.add_argument("--srate", type=float, default=1000.0, help="Hz (default 1000)")
    parser.add_argument("--readers", type=int, default=2, help="reader processes (default 2)")
    parser.add_argument("--buffer", type=float, default=5.0, help="ring length in s (default 5)")
    parser.add_argument("--name", default=f"demo_{os.getpid()}", help="ring name")
    args = parser.parse_args(argv)

    ctx = mp.get_context("spawn")
    ready, stop, attached, results = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    capacity = max(1, round(args.srate * args.buffer))
    procs = [
        ctx.Process(
            target=writer,
            args=(args.name, args.channels, args.srate, capacity, ready, stop),
            name="writer",
        )
    ]
    code = 0
    try:
        procs[0].start()
        if not ready.wait(30):
            print("writer did not create the ring within 30 s", file=sys.stderr)
            return 1
        print(
            f"ring {args.name!r}: {args.channels} ch float32 at {args.srate:g} Hz, "
            f"{capacity} samples; {args.readers} readers for {args.seconds:g} s",
            flush=True,
        )
        for n in range(args.readers):
            p = ctx.Process(
                target=reader, args=(args.name, n + 1, stop, attached, results), name="reader"
            )
            p.start()
            procs.append(p)
        try:  # the run time counts once every reader is attached
            for _ in range(args.readers):
                attached.get(timeout=30)
        except queue.Empty:
            print("a reader did not attach within 30 s", file=sys.stderr)
            return 1
        time.sleep(args.seconds)
    except KeyboardInterrupt:
        print("interrupted: shutting down", file=sys.stderr)
        code = 130
    finally:
        stop.set()
        summary = []
        with contextlib.suppress(Exception):
            for _ in procs[1:]:
                summary.append(results.get(timeout=10))
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        with contextlib.suppress(RingNotFoundError, ValueError):
            unlink_ring(args.name, force=True)  # only if the writer could not
    for number, received, lost, first_head, wrong in sorted(summary):
        print(
            f"reader {number} done: received {received} + lost {lost} = samples "
            f"{first_head}..{first_head + received + lost} (all written while attached); "
            f"bad chunks {wrong}"
        )
        if wrong:
            code = code or 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
