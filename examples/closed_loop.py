"""A closed loop: on every chunk of a shared stream, compute a feature of the newest second.

Run, with a supervisor sharing the stream (``dpshm mock`` and ``dpshm up``)::

    python examples/closed_loop.py --stream MockEEG --seconds 5

``next_window()`` sleeps until the supervisor writes, then returns the newest
1 s as read-only views of the shared memory (no copy), and moves the read
cursor past it. ``skipped_samples`` counts new samples that never appeared in a
window (the loop took longer than the window is long); it stays 0 here.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dpshm import SharedStreamView


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="MockEEG", help="LSL stream name (default MockEEG)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to run")
    parser.add_argument("--window-s", type=float, default=1.0, help="window length (s)")
    parser.add_argument("--namespace", default=None, help="supervisor namespace")
    args = parser.parse_args()

    windows, rms = 0, np.zeros(1)
    with SharedStreamView(args.stream, namespace=args.namespace) as sv:
        print(f"closed loop on {args.stream!r}: {sv.n_channels} ch at {sv.srate:g} Hz")
        end = time.monotonic() + args.seconds
        next_report = time.monotonic() + 1.0
        while time.monotonic() < end:
            win = sv.next_window(seconds=args.window_s, timeout=0.5)
            if win is None:  # nothing new for 0.5 s
                continue
            data, ts = win  # (samples, channels), newest last; read-only
            rms = np.sqrt(np.mean(np.square(data, dtype=np.float64), axis=0))
            windows += 1
            if time.monotonic() >= next_report:
                next_report += 1.0
                print(f"window of {len(ts)} samples ending at t={ts[-1]:.3f}: "
                      f"RMS of channel 0 {rms[0]:.3f}")  # fmt: skip
        print(
            f"done: {windows} windows, {sv.n_new} new samples, "
            f"{sv.skipped_samples} skipped, {sv.lost_samples} lost; last RMS {rms[0]:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
