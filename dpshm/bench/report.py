"""Output of ``dpshm bench``: the table, the JSON file and the plot."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from dpshm.bench._common import Row
from dpshm.errors import ConfigError

NEEDS_PLOT = "--plot needs matplotlib: pip install 'dpshm[plot]' (or pip install matplotlib)"
HEADER = ("figure", "dpshm", "baseline", "baseline value", "ratio", "note")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, Python, library versions, load."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from dpshm._version import __version__

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "dpshm": __version__,
        "pylsl": _version("pylsl"),
        "numpy": _version("numpy"),
        "pyzmq": _version("pyzmq"),
        "dareplane-utils": _version("dareplane-utils"),
        "loadavg_1min": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def _fmt(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g} {unit}" if abs(v) < 1000 else f"{v:.0f} {unit}"


def table(rows: list[Row]) -> str:
    """One Markdown table: each figure beside its baseline, with the ratio."""
    cells = [HEADER]
    for r in rows:
        ratio = r.ratio
        cells.append((
            r.label,
            _fmt(r.value, r.unit),
            r.baseline_label,
            _fmt(r.baseline, r.unit),
            "-" if ratio is None else f"{ratio:.2f}",
            r.needs or "",
        ))  # fmt: skip
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = []
    for k, c in enumerate(cells):
        lines.append("| " + " | ".join(s.ljust(w) for s, w in zip(c, widths, strict=True)) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_json(path: str | Path, rows: list[Row], meta: dict[str, Any], raw: Any) -> None:
    """Write the raw results: ``{"machine", "rows", "raw"}``."""
    doc = {"machine": meta, "rows": [r.to_dict() for r in rows], "raw": raw}
    Path(path).write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def require_matplotlib() -> None:
    """Raise :class:`~dpshm.errors.ConfigError` naming the fix if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(NEEDS_PLOT) from None


def plot(path: str | Path, fanout: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    """Draw fan-out CPU and latency against N (one line per implementation and format).

    Parameters
    ----------
    path : str or Path
        PNG file to write.
    fanout : dict
        ``{config tag: result of dpshm.bench.fanout.run}``.
    meta : dict
        :func:`machine`, for the title.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_cpu, ax_lat) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, (tag, res) in enumerate(fanout.items()):
        color = f"C{k}"
        for impl, style, label in (
            ("dpshm", "-o", "dpshm"),
            ("dpshm_copy", ":^", "dpshm, copied windows"),
            ("dareplane", "--s", "LSL inlets"),
        ):
            cases = res.get(impl)
            if not cases:
                continue
            ns = sorted(int(n) for n in cases)
            ax_cpu.plot(ns, [cases[n]["cpu"] for n in ns], style, color=color,
                        label=f"{tag} {label}")  # fmt: skip
            for q, alpha in (("p50", 1.0), ("p99", 0.45)):
                ax_lat.plot(ns, [cases[n][f"{q}_ms"] for n in ns], style, color=color,
                            alpha=alpha, label=f"{tag} {label} {q}")  # fmt: skip
        if res["direct"]:
            ax_lat.axhline(res["direct"]["p50_ms"], color=color, lw=0.8, ls=":",
                           label=f"{tag} direct inlet p50")  # fmt: skip
    ax_cpu.set(xlabel="consumers N", ylabel="CPU (% of one core)", title="fan-out CPU")
    ax_lat.set(xlabel="consumers N", ylabel="ms", title="outlet-to-consumer latency")
    ax_lat.set_yscale("log")
    for ax in (ax_cpu, ax_lat):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"dpshm bench on {meta['cores']} cores, {meta['cpu']}, Python {meta['python']}, "
        f"pylsl {meta['pylsl']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
