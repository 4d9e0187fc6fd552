"""Read a stream shared by the supervisor: the newest second, twice a second.

Run, with a supervisor sharing the stream (``dpshm mock`` and ``dpshm up`` in
two terminals)::

    python examples/consumer.py --stream MockEEG --seconds 5

Prints, every 0.5 s, the RMS of each channel over the newest second. The
window is a zero-copy, read-only view of the shared memory: no LSL inlet in
this process, no copy of the data.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dpshm import SharedStreamView


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="MockEEG", help="LSL stream name (default MockEEG)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to read")
    parser.add_argument("--namespace", default=None, help="supervisor namespace")
    args = parser.parse_args()

    with SharedStreamView(args.stream, namespace=args.namespace) as sv:
        if sv.srate <= 0 or sv.format == "string":
            print(f"{args.stream!r} is an irregular/marker stream: use marker_consumer.py")
            return 2
        print(
            f"attached to {args.stream!r}: {sv.n_channels} ch {sv.format} at {sv.srate:g} Hz, "
            f"ring of {sv.capacity} samples"
        )
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            time.sleep(0.5)  # a display's pace; see waiting_consumer.py to wake per chunk
            n = min(sv.head, round(sv.srate))  # at most one second, fewer right after start
            if n == 0:
                print("no samples yet")
                continue
            window, ts = sv.get_window(n_samples=n)  # zero-copy, oldest first
            rms = np.sqrt(np.mean(np.square(window, dtype=np.float64), axis=0))
            print(f"newest {n} samples up to t={ts[-1]:.3f}: RMS {np.round(rms[:4], 3)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
