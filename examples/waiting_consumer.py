"""Wake on every chunk of a shared stream and process exactly the new samples.

Run, with a supervisor sharing the stream (``dpshm mock`` and ``dpshm up``)::

    python examples/waiting_consumer.py --stream MockEEG --seconds 5

``wait()`` sleeps until the supervisor rings this consumer's doorbell after a
write (Linux; ZeroMQ head updates elsewhere; no polling),
``read_new()`` returns the samples not seen yet and how many were lost. Once
a second it prints how many samples arrived and how many were lost.
"""

from __future__ import annotations

import argparse
import time

from dpshm import SharedStreamView


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="MockEEG", help="LSL stream name (default MockEEG)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to read")
    parser.add_argument("--namespace", default=None, help="supervisor namespace")
    args = parser.parse_args()

    received = lost = wakeups = 0
    with SharedStreamView(args.stream, namespace=args.namespace, timeout=10.0) as sv:
        print(f"waiting on {args.stream!r}: {sv.n_channels} ch at {sv.srate:g} Hz")
        end = time.monotonic() + args.seconds
        next_report = time.monotonic() + 1.0
        while time.monotonic() < end:
            if sv.wait(timeout=0.5):  # blocks until the supervisor writes
                data, _, n_lost = sv.read_new()  # exactly the unseen samples
                wakeups += 1
                received += len(data)
                lost += n_lost
            if time.monotonic() >= next_report:
                next_report += 1.0
                print(f"received {received} samples in {wakeups} wake-ups, lost {lost}")
    print(f"done: received {received}, lost {lost}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
