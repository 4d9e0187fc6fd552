"""Print every marker of a shared string stream as it arrives.

Run, with a supervisor sharing a marker stream (``dpshm mock`` publishes
``MockMarkers``; then ``dpshm up``)::

    python examples/marker_consumer.py --stream MockMarkers --seconds 5

Markers come out as Python ``str`` with their LSL timestamps; none is missed
while the process runs (``read_new()`` also reports lost ones).
"""

from __future__ import annotations

import argparse
import time

from dpshm import SharedStreamView


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="MockMarkers", help="marker stream name")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to listen")
    parser.add_argument("--namespace", default=None, help="supervisor namespace")
    args = parser.parse_args()

    n = 0
    with SharedStreamView(args.stream, namespace=args.namespace) as sv:
        print(f"listening to {args.stream!r} ({sv.format}, {sv.n_channels} channel)")
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            if not sv.wait(timeout=min(0.5, max(0.0, end - time.monotonic()))):
                continue
            markers, ts, lost = sv.read_new()
            for value, t in zip(markers[:, 0], ts, strict=True):
                n += 1
                print(f"marker {value!r} at t={t:.3f}")
            if lost:
                print(f"{lost} markers lost (the ring was overwritten before reading)")
    print(f"done: {n} markers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
