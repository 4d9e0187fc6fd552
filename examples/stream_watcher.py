"""Watch an LSL stream with dpshm's StreamWatcher (drop-in for dareplane-utils').

Run: ``python examples/stream_watcher.py`` (starts its own mock outlet), or
``python examples/stream_watcher.py --stream MyEEG`` to watch an existing one.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

from dpshm.dareplane.watcher import StreamWatcher
from dpshm.lsl import Outlet


def mock_outlet(name: str, stop: threading.Event, srate: float = 250.0) -> None:
    """Push a 4-channel sine in 10 ms chunks until ``stop`` is set."""
    with Outlet(name, "EEG", 4, srate, "float32", f"{name}_src", ["Fz", "Cz", "Pz", "Oz"]) as out:
        n, t0 = 0, time.perf_counter()
        while not stop.wait(0.01):
            due = int((time.perf_counter() - t0) * srate)
            t = np.arange(n, due)[:, None] / srate
            out.push_chunk(np.sin(2 * np.pi * 10 * t + np.arange(4)).astype(np.float32))
            n = due


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", help="name of an existing LSL stream (default: start a mock)")
    ap.add_argument("--seconds", type=float, default=2.0, help="how long to watch")
    args = ap.parse_args()

    stop = threading.Event()
    mock = None
    name = args.stream
    if name is None:
        name = f"dpshm_example_eeg_{os.getpid()}"  # unique: runs may overlap
        mock = threading.Thread(target=mock_outlet, args=(name, stop), daemon=True)
        mock.start()
    try:
        with StreamWatcher(name, buffer_size_s=1.0, resolve_timeout=5.0) as sw:
            sw.connect_to_stream()
            print(f"connected: channels {sw.channel_names}, buffer {sw.buffer.shape}")
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                time.sleep(0.1)
                sw.update()
                if sw.n_new:
                    newest = sw.unfold_buffer()[-sw.n_new :]
                    print(f"{sw.n_new:4d} new samples, last {np.round(newest[-1], 3)}")
                    sw.n_new = 0  # mark as consumed
    finally:
        stop.set()
        if mock is not None:
            mock.join(5.0)


if __name__ == "__main__":
    main()
