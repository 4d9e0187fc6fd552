"""Marker-locked epoch worker: for each marker of a marker stream, cut the
window ``[t - pre_s, t + post_s]`` around the marker's timestamp out of a
signal stream.

As a supervisor worker (see examples/workers.toml)::

    dpshm mock &                                   # a signal + a marker stream
    dpshm up --config examples/workers.toml &
    printf 'START_WORKER|{"worker": "epochs", "streams": ["MockEEG", "MockMarkers"]};' \\
        | nc -q1 127.0.0.1 7090

Standalone, against a running supervisor (Ctrl-C stops it)::

    python examples/epoch_worker.py --signal MockEEG --markers MockMarkers

The target is ``run(ctx)``: ``ctx.streams`` holds the signal and the marker
stream (the marker stream is the one with string samples). ``ctx.kwargs``:
``pre_s`` (0.2), ``post_s`` (0.5), ``out`` (optional ``.npz`` file name:
every epoch is saved there when the worker stops), ``out_dir`` (the directory
``out`` is saved in, default the current one; declared in the config, not
settable by a client, whose ``out`` is a bare file name), ``max_epochs`` (stop
after that many, default unlimited).
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import numpy as np


def _split_streams(streams: dict) -> tuple[str, object, str, object]:
    markers = [n for n, v in streams.items() if v.format == "string"]
    signals = [n for n, v in streams.items() if v.format != "string"]
    if len(markers) != 1 or len(signals) != 1:
        raise ValueError(
            "epochs needs one signal and one marker (string) stream, got "
            f"signals {signals} and markers {markers}"
        )
    return signals[0], streams[signals[0]], markers[0], streams[markers[0]]


def cut_epoch(
    data: np.ndarray, ts: np.ndarray, t0: float, pre_s: float, post_s: float, srate: float
):
    """The epoch around ``t0`` (rows and times relative to ``t0``), or None if not all there.

    A regular stream gives every epoch the same length, ``round((pre_s + post_s) * srate)``
    samples from the first one at or after ``t0 - pre_s`` (timestamps jitter; the sample
    count does not). An irregular one gives the rows with ``t0 - pre_s <= ts < t0 + post_s``.
    """
    if len(ts) == 0 or ts[0] > t0 - pre_s or ts[-1] < t0 + post_s:
        return None  # not (or no longer) all in the window
    a = int(np.searchsorted(ts, t0 - pre_s))
    if srate > 0:
        b = a + round((pre_s + post_s) * srate)
        if b > len(ts):
            return None
    else:
        b = int(np.searchsorted(ts, t0 + post_s))
    return data[a:b].copy(), ts[a:b] - t0


def run(ctx) -> None:
    """Worker target: collect epochs until ``ctx.stop_event`` is set."""
    sig_name, sig, mk_name, mk = _split_streams(ctx.streams)
    pre_s = float(ctx.kwargs.get("pre_s", 0.2))
    post_s = float(ctx.kwargs.get("post_s", 0.5))
    max_epochs = ctx.kwargs.get("max_epochs")
    span = pre_s + post_s
    if sig.srate > 0 and span * sig.srate > sig.capacity:
        raise ValueError(
            f"epoch of {span} s does not fit the ring of {sig_name!r} "
            f"({sig.capacity / sig.srate:g} s); raise the supervisor's buffer_s"
        )
    ctx.logger.info("epochs of %r locked to %r: -%g s .. +%g s", sig_name, mk_name, pre_s, post_s)
    pending: list[tuple[str, float]] = []  # markers whose post window is not complete yet
    epochs, labels = [], []
    wait = getattr(mk, "wait", None)  # the supervisor's views block on a notification
    mk.read_new()  # only markers from now on
    while not ctx.stop_event.is_set():
        if wait is not None:
            wait(0.05)
        else:
            ctx.stop_event.wait(0.02)
        new, new_ts, lost = mk.read_new()
        if lost:
            ctx.logger.warning("%d markers were overwritten before they were read", lost)
        pending.extend(zip((str(m[0]) for m in new), new_ts.tolist(), strict=True))
        if not pending:
            continue
        latest = sig.latest_timestamp
        if latest is None:
            continue
        # a window reaching back to the oldest pending marker (10 % margin for jitter)
        back = latest - min(t0 for _, t0 in pending) + pre_s
        n = sig.capacity
        if sig.srate > 0:
            n = max(1, min(n, int(np.ceil(back * sig.srate * 1.1)) + 2))
        data, ts = sig.get_window(n_samples=n, copy=True)
        still = []
        for label, t0 in pending:
            if latest < t0 + post_s:
                still.append((label, t0))  # the post-marker part is not there yet
                continue
            ep = cut_epoch(data, ts, t0, pre_s, post_s, sig.srate)
            if ep is None and len(ts) and ts[0] <= t0 - pre_s:
                still.append((label, t0))  # its last samples are on their way
                continue
            if ep is None:
                ctx.logger.warning("marker %r at %.3f: its epoch is no longer buffered", label, t0)
                continue
            epochs.append(ep[0])
            labels.append(label)
            ctx.logger.info("epoch %d: %r at %.3f, %d samples", len(epochs), label, t0, len(ep[0]))
        pending = still
        if max_epochs is not None and len(epochs) >= int(max_epochs):
            break
    if ctx.kwargs.get("out") and epochs:
        n = min(len(e) for e in epochs)
        out_dir = Path(ctx.kwargs.get("out_dir") or ".")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / ctx.kwargs["out"]
        np.savez(path, epochs=np.stack([e[:n] for e in epochs]), labels=labels)
        ctx.logger.info("saved %d epochs to %s", len(epochs), path)
    ctx.logger.info("epoch worker %s collected %d epochs", ctx.id, len(epochs))


def main() -> None:
    import logging

    from dpshm.control.context import WorkerContext
    from dpshm.shm.view import SharedStreamView

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--signal", default="MockEEG", help="signal stream (default: %(default)s)")
    p.add_argument("--markers", default="MockMarkers", help="marker stream (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--out", default=None, help="save the epochs to this .npz file")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    if args.seconds is not None:
        threading.Timer(args.seconds, stop.set).start()
    with SharedStreamView(args.signal) as sig, SharedStreamView(args.markers) as mk:
        ctx = WorkerContext(
            id="epochs-standalone",
            name="epochs",
            streams={args.signal: sig, args.markers: mk},
            stop_event=stop,
            logger=logging.getLogger("epochs"),
            kwargs={"out": Path(args.out).name, "out_dir": str(Path(args.out).parent)}
            if args.out
            else {},
        )
        try:
            run(ctx)
        except KeyboardInterrupt:
            stop.set()


if __name__ == "__main__":
    main()
