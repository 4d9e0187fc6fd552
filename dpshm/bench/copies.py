"""Copy benchmarks: ``unfold_buffer()`` and ``get_window()`` against their baselines.

The baselines are a plain numpy copy and the original dareplane-utils
StreamWatcher.

One ring of ``seconds`` x ``srate`` rows x ``n_channels`` float32, filled with
10 ms chunks, is read through :class:`~dpshm.shm.view.SharedStreamView`; the same
data is held by the original ``StreamWatcher``'s ring buffer (its
``unfold_buffer()`` is what a Dareplane module calls to read its data; the
original has no window method, so a module takes ``unfold_buffer()[-n:]``).
Every figure is the best per-call time of ``repeat`` runs (see
:func:`~dpshm.bench._common.best_us_each`: a figure and its baseline are
timed in turn).
"""

from __future__ import annotations

import logging

import numpy as np

from dpshm.bench._common import NEEDS_ORIGINAL, Row, best_us_each, filled_ring, import_original


def _tag(n_ch: int, srate: float, seconds: float) -> str:
    return f"{n_ch}ch x {seconds:g} s @ {srate / 1000:g} kHz"


def measure(
    n_ch: int = 64,
    srate: float = 1000.0,
    seconds: float = 5.0,
    window_s: float = 1.0,
    repeat: int = 5,
    budget_s: float = 0.05,
) -> list[Row]:
    """Measure the copy figures; returns one :class:`Row` per figure.

    Parameters
    ----------
    n_ch, srate, seconds : int, float, float
        Ring of ``seconds * srate`` rows of ``n_ch`` float32 channels.
    window_s : float
        Length of the ``get_window`` window in seconds.
    repeat, budget_s : int, float
        Runs per figure and seconds per run (best run counts).
    """
    from dpshm.dareplane.ringbuffer import RingBuffer

    n_win = round(srate * window_s)
    tag = _tag(n_ch, srate, seconds)

    def t(*funcs: object) -> list[float]:  # figure and baseline timed in turn
        return best_us_each(*funcs, repeat=repeat, budget_s=budget_s)  # type: ignore[arg-type]

    rows: list[Row] = []
    with filled_ring(n_ch, srate, seconds) as f:
        ring, sv, chunk, ts, capacity = f.ring, f.view, f.chunk, f.ts, f.capacity
        chunk_n = len(chunk)
        write, base_write = t(lambda: ring.write(chunk, ts), f.copy_twice)
        rows.append(Row("ring_write", f"SharedRing.write({chunk_n} rows), {tag}", "us",
                        write, "chunk copied twice", base_write))  # fmt: skip
        plain = np.zeros((2 * capacity, n_ch), np.float32)
        win_view, base_view = t(lambda: sv.get_window(n_win), lambda: plain[5 : 5 + n_win])
        rows.append(Row("get_window_view", f"get_window({n_win}) zero-copy", "us", win_view,
                        "numpy slice", base_view))  # fmt: skip
        win_bytes = np.ascontiguousarray(sv.get_window(n_win)[0])
        win_copy, base_win = t(lambda: sv.get_window(n_win, copy=True), lambda: np.copy(win_bytes))
        rows.append(Row("get_window_copy", f"get_window({n_win}, copy=True)", "us", win_copy,
                        "np.copy of the same bytes", base_win))  # fmt: skip
        full_bytes = np.ascontiguousarray(sv.get_window(capacity)[0])
        unfold, base_unfold = t(sv.unfold_buffer, lambda: np.copy(full_bytes))
        rows.append(Row("unfold_buffer", f"SharedStreamView.unfold_buffer() {tag}", "us",
                        unfold, "np.copy of the same bytes", base_unfold))  # fmt: skip

    rb = RingBuffer((capacity, n_ch), dtype=np.float32)
    for _ in range(capacity // chunk_n + 1):
        rb.add_samples(chunk, ts)
    own = (rb.unfold_buffer, lambda: rb.add_samples(chunk, ts))
    orig = _original_watcher(n_ch, srate, seconds)
    if orig is None:
        rb_unfold, rb_add = t(*own)
        o_unfold = o_window = o_add = None
        needs: str | None = NEEDS_ORIGINAL
    else:
        for _ in range(capacity // chunk_n + 1):
            orig.ring_buffer.add_samples(chunk, ts)
        rb_unfold, rb_add, o_unfold, o_window, o_add = t(
            *own,
            orig.unfold_buffer,
            lambda: orig.unfold_buffer()[-n_win:],
            lambda: orig.ring_buffer.add_samples(chunk, ts),
        )
        needs = None
    orig_label = "original StreamWatcher"
    rows += [
        Row("get_window_vs_original", f"get_window({n_win}, copy=True)", "us", win_copy,
            f"{orig_label}.unfold_buffer()[-{n_win}:]", o_window, needs),
        Row("unfold_buffer_vs_original", "SharedStreamView.unfold_buffer()", "us", unfold,
            f"{orig_label}.unfold_buffer()", o_unfold, needs),
        Row("watcher_unfold_vs_original", "StreamWatcher.unfold_buffer() (in-process)", "us",
            rb_unfold, f"{orig_label}.unfold_buffer()", o_unfold, needs),
        Row("watcher_add_vs_original", f"RingBuffer.add_samples({chunk_n} rows)", "us", rb_add,
            "original RingBuffer.add_samples", o_add, needs),
    ]  # fmt: skip
    return rows


def _original_watcher(n_ch: int, srate: float, seconds: float) -> object | None:
    """The original StreamWatcher holding an original RingBuffer of the given shape.

    Set up as ``connect_to_stream()`` does (no LSL needed for reading it).
    """
    sw_mod = import_original("dareplane_utils.stream_watcher.lsl_stream_watcher")
    rb_mod = import_original("dareplane_utils.general.ringbuffer")
    if sw_mod is None or rb_mod is None:
        return None
    silent = logging.Logger("dpshm.bench.silent", level=logging.CRITICAL)
    sw = sw_mod.StreamWatcher("bench", buffer_size_s=seconds, logger=silent)
    sw.ring_buffer = rb_mod.RingBuffer((round(srate * seconds), n_ch), dtype=np.float32)
    sw.ring_buffer.logger = silent
    return sw
