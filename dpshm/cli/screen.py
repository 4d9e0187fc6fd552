"""What ``dpshm ls`` and the live screen show: the stream table (:mod:`.live` draws it live)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def fmt_rate(v: Any) -> str:
    """A nominal rate for the table: ``irreg`` for irregular streams."""
    return "irreg" if not v else f"{float(v):g}"


def state_text(s: dict[str, Any]) -> str:
    """A stream's state for the tables: ``ok``, or ``STALE``/``ERROR`` and a short reason."""
    if not s.get("stale"):
        return "ok"
    state, reason = s.get("state") or "STALE", s.get("reason")
    return f"{state}: {reason}" if reason else state


def _host(s: dict[str, Any]) -> str:
    """Where a stream comes from: its host, and the producer's pid for a published one."""
    host = s.get("hostname") or "-"
    pid = s.get("producer_pid")
    return host if pid is None else f"{host}, pid {pid}"


def name_collisions(streams: Sequence[dict[str, Any]]) -> list[str]:
    """One note per stream name that several shared streams carry."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in streams:
        by_name.setdefault(s["name"], []).append(s)
    notes = []
    for name, same in sorted(by_name.items()):
        if len(same) > 1:
            who = ", ".join(f"{s.get('source_id')!r} on {s.get('hostname') or '?'}" for s in same)
            notes.append(
                f"note: {len(same)} streams are named {name!r} (source_id {who}); choose one "
                f"with SharedStreamView({name!r}, source_id=...) or `dpshm tail --source-id`"
            )
    return notes


def format_table(status: dict[str, Any]) -> str:
    """The ``dpshm ls`` table of a supervisor status dict."""
    cols = ("stream", "type", "ch", "rate", "measured", "head", "lag ms", "lost", "host",
            "source_id", "state")  # fmt: skip
    streams = sorted(status.get("streams", {}).values(), key=lambda s: s["name"])
    rows = []
    for s in streams:
        lag = s.get("lag_s")
        rows.append(
            (
                s["name"],
                s["type"],
                str(s["channels"]),
                fmt_rate(s["srate"]),
                f"{s.get('measured_rate', 0.0):.1f}",
                str(s.get("head", 0)),
                "-" if lag is None or (isinstance(lag, float) and math.isnan(lag))
                else f"{lag * 1e3:.1f}",
                str(s.get("lost", 0)),
                _host(s),
                s.get("source_id") or "-",
                state_text(s),
            )
        )  # fmt: skip
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if not rows:
        lines.append("(no streams yet: start an LSL outlet, e.g. `dpshm mock`)")
    lines += name_collisions(streams)
    head = f"namespace {status.get('namespace')!r}, supervisor pid {status.get('pid')}"
    return head + "\n" + "\n".join(lines)
