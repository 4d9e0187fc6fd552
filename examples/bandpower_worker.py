"""Band-power worker: every 100 ms, the power of the last 1 s of a stream in a
frequency band, per channel, published as an LSL stream.

As a supervisor worker (see examples/workers.toml)::

    dpshm mock --channels 64 --rate 1000 &        # a 64 ch signal + markers
    dpshm up --config examples/workers.toml &
    printf 'START_WORKER|{"worker": "bandpower", "streams": ["MockEEG"]};' \\
        | nc -q1 127.0.0.1 8080

Standalone, against a running supervisor (Ctrl-C stops it)::

    python examples/bandpower_worker.py --stream MockEEG

The target is ``run(ctx)``: ``ctx.streams`` holds exactly one stream, read
zero-copy from shared memory (no LSL inlet); ``ctx.kwargs`` may set ``band``
(Hz, default [8, 12]), ``window_s`` (1.0), ``period_s`` (0.1) and ``outlet``
(the name of the published stream, default "bandpower").
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np


def band_power(window: np.ndarray, srate: float, band: tuple[float, float]) -> np.ndarray:
    """Mean power spectral density in ``band`` per channel of ``window`` (rows = samples)."""
    x = window - window.mean(axis=0)
    x = x * np.hanning(len(x))[:, None]
    spec = np.abs(np.fft.rfft(x, axis=0)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / srate)
    sel = (freqs >= band[0]) & (freqs <= band[1])
    if not sel.any():
        raise ValueError(f"band {band} Hz holds no frequency bin at {srate} Hz, {len(x)} samples")
    return spec[sel].mean(axis=0).astype(np.float32)


def run(ctx) -> None:
    """Worker target: publish band power until ``ctx.stop_event`` is set."""
    from dpshm.lsl import Outlet  # only to publish; the input comes from shared memory

    if len(ctx.streams) != 1:
        raise ValueError(f"bandpower needs exactly one stream, got {sorted(ctx.streams)}")
    ((name, view),) = ctx.streams.items()
    srate = view.srate
    if srate <= 0:
        raise ValueError(f"stream {name!r} is irregular; band power needs a nominal rate")
    band = tuple(ctx.kwargs.get("band", (8.0, 12.0)))
    window_s = float(ctx.kwargs.get("window_s", 1.0))
    period_s = float(ctx.kwargs.get("period_s", 0.1))
    n = round(window_s * srate)
    outlet = Outlet(
        ctx.kwargs.get("outlet", "bandpower"),
        "BandPower",
        view.n_channels,
        1.0 / period_s,
        "float32",
        source_id=f"dpshm-bandpower-{ctx.id}",
        channel_names=view.channel_names,
    )
    ctx.logger.info(
        "band power %s Hz of %r (%d ch, %g Hz): %g s window every %g s",
        band, name, view.n_channels, srate, window_s, period_s,
    )  # fmt: skip
    windows = 0
    deadline = time.perf_counter()
    try:
        while not ctx.stop_event.is_set():
            if view.head >= n:
                data, ts = view.get_window(n_samples=n)  # zero-copy, read-only
                outlet.push_sample(band_power(data, srate, band), float(ts[-1]))
                windows += 1
            deadline = max(deadline + period_s, time.perf_counter())  # no catch-up bursts
            ctx.stop_event.wait(deadline - time.perf_counter())
    finally:
        outlet.close()
        ctx.logger.info("band power worker %s published %d windows", ctx.id, windows)


def main() -> None:
    from dpshm.control.context import WorkerContext
    from dpshm.shm.view import SharedStreamView

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stream", default="MockEEG", help="stream to read (default: %(default)s)")
    p.add_argument("--band", type=float, nargs=2, default=(8.0, 12.0), metavar=("LO", "HI"))
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    if args.seconds is not None:
        threading.Timer(args.seconds, stop.set).start()
    with SharedStreamView(args.stream) as view:
        ctx = WorkerContext(
            id="bandpower-standalone",
            name="bandpower",
            streams={args.stream: view},
            stop_event=stop,
            logger=logging.getLogger("bandpower"),
            kwargs={"band": list(args.band)},
        )
        try:
            run(ctx)
        except KeyboardInterrupt:
            stop.set()


if __name__ == "__main__":
    main()
