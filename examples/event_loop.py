"""Pace work with dpshm's EventLoop: a 100 Hz loop that ends by itself after 1 s.

Run: ``python examples/event_loop.py``

Shows the three kinds of callbacks (periodic, one-time, delayed one-time), the
``ctx`` object they share, running the loop in a background thread, and the
overrun counters. Switching from dareplane-utils is a change of import:
``from dareplane_utils.general.event_loop import EventLoop`` becomes
``from dpshm import EventLoop``.
"""

from __future__ import annotations

import time

from dpshm import EventLoop, sleep_s


def main() -> None:
    ctx = {"ticks": [], "events": []}
    loop = EventLoop(dt_s=0.01, ctx=ctx)

    def on_tick(ctx: dict) -> None:  # periodic: gets the loop's ctx
        ctx["ticks"].append(time.perf_counter())

    def hello() -> None:  # no ctx parameter: called without it
        ctx["events"].append("started")

    loop.add_callback(on_tick)
    loop.add_callback_once(hello)
    loop.add_delayed_callback_once(lambda ctx: ctx["events"].append("half-way"), dt=0.5)
    loop.add_delayed_callback_once(lambda: loop.stop_event.set(), dt=1.0)  # ends the loop

    with loop:  # leaving the block stops the thread (bounded wait)
        thread = loop.start()
        thread.join(timeout=5.0)

    ticks = ctx["ticks"]
    mean_ms = (ticks[-1] - ticks[0]) / (len(ticks) - 1) * 1e3
    print(f"events: {ctx['events']}")
    print(f"{loop.ticks} ticks, mean period {mean_ms:.3f} ms (dt_s = 10 ms)")
    print(f"overruns: {loop.overruns}, missed ticks: {loop.missed_ticks}")

    t = time.perf_counter()
    sleep_s(0.002)
    print(f"sleep_s(0.002) took {(time.perf_counter() - t) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
