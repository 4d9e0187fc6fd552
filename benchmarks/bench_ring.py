"""Benchmark of the shared-memory ring against plain numpy copies measured in the same run.

    python benchmarks/bench_ring.py [--repeat 7]

For 64 ch float32 x 5 s at 1 kHz and 256 ch x 5 s at 2 kHz it prints the cost of
writing a 10 ms chunk (baseline: copying the chunk twice, i.e. row + mirror),
``get_window(copy=False)`` for a short and a full window (baseline: slicing a
numpy array), ``unfold_buffer()`` (baseline: ``np.copy`` of the same bytes),
a consumer's ``read_new()``/``update()`` of one 10 ms chunk (write + read, minus
the write alone; baseline: copying the chunk and its timestamps), and, as the
peer, dareplane-utils' RingBuffer doing the same (if installed) beside dpshm's
in-process RingBuffer.
Each figure is the best of ``--repeat`` runs; ratios are to the baseline.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from dpshm.bench._common import best_us_each, filled_ring
from dpshm.dareplane.ringbuffer import RingBuffer as OwnRingBuffer

TARGETS = {"write": 3.0, "unfold_buffer()": 1.5}


def bench(n_ch: int, srate: float, seconds: float, repeat: int) -> list[tuple]:
    def best_us(*funcs: Callable[[], object]) -> list[float]:
        return best_us_each(*funcs, repeat=repeat, budget_s=0.02)

    rows = []
    with filled_ring(n_ch, srate, seconds) as f:
        ring, sv, chunk, ts, capacity = f.ring, f.view, f.chunk, f.ts, f.capacity
        chunk_n = len(chunk)
        t_w, base_w = best_us(lambda: ring.write(chunk, ts), f.copy_twice)
        rows.append(("write 10 ms chunk", t_w, "chunk copied twice", base_w, "write"))
        plain = np.zeros((2 * capacity, n_ch), np.float32)
        for n in (chunk_n * 10, capacity):
            t_view, t_slice = best_us(lambda n=n: sv.get_window(n), lambda n=n: plain[5 : 5 + n])
            rows.append((f"get_window({n}, copy=False)", t_view, "numpy slice", t_slice, None))
        window = sv.get_window(capacity, copy=True)[0]  # outlives the ring (peer baseline)
        t_u, t_c, base_u = best_us(
            sv.unfold_buffer, lambda: sv.get_window(copy=True), lambda: np.copy(window)
        )
        rows.append(("unfold_buffer()", t_u, "np.copy same bytes", base_u, "unfold_buffer()"))
        rows.append(("get_window(copy=True)", t_c, "np.copy same bytes", base_u, None))
        # a consumer's cost per 10 ms chunk: (write + read) minus the write alone
        t_rn, t_up, t_wr, base_r = best_us(
            lambda: (ring.write(chunk, ts), sv.read_new()),
            lambda: (ring.write(chunk, ts), sv.update()),
            lambda: ring.write(chunk, ts),
            lambda: (np.copy(chunk), np.copy(ts)),
        )
        rows.append(("read_new() of 10 ms", t_rn - t_wr, "np.copy chunk + ts", base_r, None))
        rows.append(("update() of 10 ms", t_up - t_wr, "np.copy chunk + ts", base_r, None))
        copy_twice = f.copy_twice
    try:
        from dareplane_utils.general.ringbuffer import RingBuffer
    except ImportError:
        return rows
    rb = RingBuffer((capacity, n_ch), dtype=np.float32)
    own = OwnRingBuffer((capacity, n_ch), dtype=np.float32)
    for _ in range(capacity // chunk_n + 1):
        rb.add_samples(chunk, ts)
        own.add_samples(chunk, ts)
    t_peer, t_own, base_w = best_us(
        lambda: rb.add_samples(chunk, ts), lambda: own.add_samples(chunk, ts), copy_twice
    )
    rows.append(("peer RingBuffer.add_samples", t_peer, "chunk copied twice", base_w, None))
    rows.append(("dpshm RingBuffer.add_samples", t_own, "chunk copied twice", base_w, None))
    t_peer_u, base_u = best_us(rb.unfold_buffer, lambda: np.copy(window))
    rows.append(("peer RingBuffer.unfold_buffer", t_peer_u, "np.copy same bytes", base_u, None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for n_ch, srate in ((64, 1000.0), (256, 2000.0)):
        print(f"\n{n_ch} ch float32 x 5 s at {srate:g} Hz ({n_ch * srate * 5 * 4 / 2**20:.2f} MiB)")
        print(f"{'operation':32s} {'us':>9s}   {'baseline':20s} {'us':>9s} {'ratio':>7s}  target")
        for label, t, base_label, base, target_key in bench(n_ch, srate, 5.0, args.repeat):
            target = f"<= {TARGETS[target_key]}x" if target_key else ""
            if label.startswith("get_window(") and "copy=False" in label:
                target = "< 20 us"
            print(f"{label:32s} {t:9.2f}   {base_label:20s} {base:9.2f} {t / base:7.2f}  {target}")


if __name__ == "__main__":
    main()
