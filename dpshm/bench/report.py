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
        "mne-lsl": _version("mne-lsl"),
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


#: The run is flagged unreliable when the 1-minute load average exceeds this share of
#: the cores before it (other programs already busy) ...
LOAD_BEFORE_MAX = 0.5
#: ... or this share after it (the benchmark's own processes included: a run queue
#: longer than the cores means processes waited for a CPU while being timed).
LOAD_AFTER_MAX = 1.0


def load_warning(before: float, after: float, cores: int | None) -> str | None:
    """A warning line when the machine's load makes the figures unreliable, else None.

    Parameters
    ----------
    before, after : float
        ``os.getloadavg()[0]`` before and after the run.
    cores : int or None
        ``os.cpu_count()``.
    """
    cores = max(1, cores or 1)
    if before <= LOAD_BEFORE_MAX * cores and after <= LOAD_AFTER_MAX * cores:
        return None
    return (
        f"WARNING: this machine was busy (1-minute load {before:.2f} before the run, "
        f"{after:.2f} after, on {cores} cores): processes waited for a CPU while being "
        "timed, so these figures are unreliable. Ratios hold better than absolute values "
        "(each figure and its baseline ran in turn). Close other programs and run again."
    )


def _fanout_rows(rows: list[Row]) -> tuple[list[str], int, dict[str, Row]]:
    """Stream tags in run order, the largest N and the fan-out rows by key."""
    by_key = {r.key: r for r in rows if r.key.startswith(("fanout_", "latency_"))}
    tags: list[str] = []
    n_max = 0
    for key in by_key:
        kind, tag, n = key.split("/")
        if kind == "fanout_cpu":
            if tag not in tags:
                tags.append(tag)
            n_max = max(n_max, int(n.removeprefix("N=")))
    return tags, n_max, by_key


def _times(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return ""
    r = theirs / ours
    return f" ({r:.1f}x less)" if r >= 1 else f" ({1 / r:.1f}x more)"


def _cpu_vs(row: Row | None, who: str) -> str | None:
    if row is None:
        return None
    if row.baseline is None:
        return f"{who}: not measured ({row.needs})"
    return f"{row.baseline:.0f} % for {who}{_times(row.value, row.baseline)}"


def _lat(rows: dict[str, Row], tag: str, n: int, suffix: str) -> tuple[Row | None, Row | None]:
    return rows.get(f"latency_p50{suffix}/{tag}/N={n}"), rows.get(
        f"latency_p99{suffix}/{tag}/N={n}"
    )


def _pair(p50: float | None, p99: float | None) -> str:
    if p50 is None or p99 is None or math.isnan(p50) or math.isnan(p99):
        return "not measured"
    return f"{p50:.2g}/{p99:.2g} ms"


def headline(rows: list[Row]) -> list[str]:
    """The answer to "how much does dpshm save on this machine?" in 3-5 lines.

    At the largest consumer count N: the CPU the N consumers (plus the
    supervisor) use with dpshm against N original StreamWatchers and N mne-lsl
    ``StreamLSL`` (one line per stream format), and the latency p50/p99 of dpshm
    against a direct LSL inlet, the original StreamWatchers and mne-lsl (first
    stream format). Empty when the run had no fan-out rows.
    """
    tags, n, by_key = _fanout_rows(rows)
    if not tags:
        return []
    lines = [f"How much dpshm saves on this machine, N={n} consumers of one stream:"]
    for tag in tags:
        cpu = by_key[f"fanout_cpu/{tag}/N={n}"]
        if cpu.value is None:
            lines.append(f"  CPU, {tag}: dpshm not measured ({cpu.needs})")
            continue
        parts = [
            _cpu_vs(cpu, f"{n} original StreamWatchers"),
            _cpu_vs(by_key.get(f"fanout_cpu_vs_mnelsl/{tag}/N={n}"), f"{n} mne-lsl StreamLSLs"),
        ]
        vs = "; ".join(p for p in parts if p)
        lines.append(f"  CPU, {tag}: dpshm {cpu.value:.0f} % of one core vs {vs}")
    tag = tags[0]
    p50, p99 = _lat(by_key, tag, n, "")
    if p50 is not None and p99 is not None:
        parts = [
            f"dpshm {_pair(p50.value, p99.value)}",
            f"direct LSL inlet {_pair(p50.baseline, p99.baseline)}",
        ]
        for suffix, who in (
            ("_vs_original", "original StreamWatchers"),
            ("_vs_mnelsl", "mne-lsl StreamLSL"),
        ):
            b50, b99 = _lat(by_key, tag, n, suffix)
            if b50 is not None and b99 is not None:
                parts.append(f"{who} {_pair(b50.baseline, b99.baseline)}")
        lines.append(f"  latency p50/p99, {tag}: " + "; ".join(parts))
    return lines


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
