"""What ``dpshm up``, ``demo`` and ``ls`` show: the stream table and the live status block."""

from __future__ import annotations

import math
import sys
import time
from typing import Any


def fmt_rate(v: Any) -> str:
    """A nominal rate for the table: ``irreg`` for irregular streams."""
    return "irreg" if not v else f"{float(v):g}"


def format_table(status: dict[str, Any]) -> str:
    """The ``dpshm ls`` table of a supervisor status dict."""
    cols = ("stream", "type", "ch", "rate", "measured", "head", "lag ms", "lost", "stale")
    rows = []
    for s in sorted(status.get("streams", {}).values(), key=lambda s: s["name"]):
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
                "STALE" if s.get("stale") else "-",
            )
        )  # fmt: skip
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    if not rows:
        lines.append("(no streams yet: start an LSL outlet, e.g. `dpshm mock`)")
    head = f"namespace {status.get('namespace')!r}, supervisor pid {status.get('pid')}"
    return head + "\n" + "\n".join(lines)


class LiveStatus:
    """Compact status block, redrawn in place on a terminal, else one line per 5 s."""

    def __init__(self, stream=None):
        self.out = stream or sys.stdout
        self.tty = self.out.isatty()
        self.lines = 0
        self.last = 0.0

    def __call__(self, status: dict[str, Any]) -> None:
        """Show one status dict (the supervisor calls this about once a second)."""
        if self.tty:
            text = format_table(status)
            if self.lines:
                self.out.write(f"\x1b[{self.lines}F\x1b[J")
            self.out.write(text + "\n")
            self.lines = text.count("\n") + 1
        elif status["streams"] and time.monotonic() - self.last >= 5.0:
            self.last = time.monotonic()
            parts = [
                f"{s['name']}: head {s['head']} {s['measured_rate']:.0f} Hz"
                f"{' STALE' if s['stale'] else ''}"
                for s in status["streams"].values()
            ]
            self.out.write(f"[dpshm] {len(parts)} stream(s): " + "; ".join(parts) + "\n")
        self.out.flush()
