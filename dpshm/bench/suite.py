"""Runs every benchmark of :mod:`dpshm.bench` and collects one list of rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dpshm._logging import library_logger
from dpshm.bench import copies, fanout, loop, roundtrip
from dpshm.bench._common import Row

log = library_logger(__name__)


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run (see :func:`plan`)."""

    quick: bool
    formats: tuple[tuple[int, float], ...]  # fan-out streams: (channels, rate)
    ns: tuple[int, ...]  # consumer counts
    fanout_s: float  # measurement window per fan-out case
    loop_s: float  # seconds per EventLoop implementation and case
    up_n: int  # UP round trips per server
    repeat: int  # runs per copy figure (best counts)


def plan(quick: bool = False) -> Plan:
    """The full suite, or ``quick``: every row kind, fewer N, shorter runs (about a minute)."""
    if quick:
        return Plan(True, ((64, 1000.0),), (1, 4), 1.5, 1.0, 300, 3)
    return Plan(False, ((64, 1000.0), (256, 2000.0)), (1, 2, 4, 8), 6.0, 5.0, 2000, 7)


def run(p: Plan, progress: Callable[[str], None] = log.info) -> tuple[list[Row], dict[str, Any]]:
    """Run the suite; returns the rows and the raw fan-out results (``{tag: ...}``)."""
    rows: list[Row] = []
    progress("copies: unfold_buffer() and get_window()")
    rows += copies.measure(repeat=p.repeat, budget_s=0.02 if p.quick else 0.05)
    progress("EventLoop")
    rows += loop.measure(p.loop_s)
    progress("UP round trip")
    rows += roundtrip.measure(p.up_n)
    raw: dict[str, Any] = {}
    for ch, rate in p.formats:
        tag = fanout.config_tag(ch, rate)
        progress(f"fan-out and latency, {tag}, N = {', '.join(map(str, p.ns))}")
        res = raw[tag] = fanout.run(ch, rate, p.ns, p.fanout_s)
        rows += fanout.rows(ch, rate, p.ns, res)
    return rows, raw
