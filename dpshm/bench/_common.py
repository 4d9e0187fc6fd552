"""What every benchmark of :mod:`dpshm.bench` shares.

The result row, timing statistics and the import of the original
dareplane-utils (an optional extra).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import timeit
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

#: Chunk length of the benchmarks' streams (s): what the outlets push at once.
CHUNK_S = 0.010
#: Shown instead of a baseline that needs the original dareplane-utils.
NEEDS_ORIGINAL = "baseline needs: pip install 'dpshm[bench]'"


@dataclass
class Row:
    """One line of the ``dpshm bench`` table.

    Attributes
    ----------
    key : str
        Stable identifier (``"fanout_cpu/64ch@1kHz/N=4"``), also the JSON key.
    label : str
        What is measured, as printed.
    unit : str
        Unit of ``value`` and ``baseline`` (``"us"``, ``"ms"``, ``"%"``).
    value : float or None
        The dpshm figure (``None`` when it could not be measured: see ``needs``).
    baseline_label : str
        What the baseline is.
    baseline : float or None
        The baseline figure, measured in the same run.
    needs : str or None
        Why a figure is missing and how to get it (printed in its place).
    extra : dict
        Further raw figures (JSON only).
    """

    key: str
    label: str
    unit: str
    value: float | None
    baseline_label: str
    baseline: float | None
    needs: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """``value / baseline`` (absolute values), or ``None`` if either is missing."""
        if self.value is None or self.baseline is None:
            return None
        v, b = abs(self.value), abs(self.baseline)
        if b == 0 or math.isnan(v) or math.isnan(b):
            return None
        return v / b

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ratio included)."""
        return {**asdict(self), "ratio": self.ratio}


def best_us(func: Callable[[], object], repeat: int, budget_s: float = 0.05) -> float:
    """Best per-call time of ``func`` in microseconds over ``repeat`` runs.

    Each run calls ``func`` as often as fits into about ``budget_s`` seconds
    (estimated from a few calibration calls, which also warm the caches).
    """
    return best_us_each(func, repeat=repeat, budget_s=budget_s)[0]


def best_us_each(*funcs: Callable[[], object], repeat: int, budget_s: float = 0.05) -> list[float]:
    """:func:`best_us` of each of ``funcs``, timed in turn.

    The ``repeat`` runs interleave the functions (a run of each, then the next
    round), so load from other processes on a shared machine hits a figure and
    its baseline alike.
    """
    timers = [timeit.Timer(f) for f in funcs]
    numbers = [max(1, int(budget_s / max(min(t.repeat(repeat=3, number=1)), 1e-7))) for t in timers]
    best = [math.inf] * len(timers)
    for _ in range(repeat):
        for i, (timer, number) in enumerate(zip(timers, numbers, strict=True)):
            best[i] = min(best[i], timer.timeit(number) / number)
    return [b * 1e6 for b in best]


@dataclass
class FilledRing:
    """A full ring of float32 data, a view of it and its 10 ms chunk (see :func:`filled_ring`)."""

    ring: Any  # dpshm.shm.ring.SharedRing
    view: Any  # dpshm.shm.view.SharedStreamView
    chunk: np.ndarray
    ts: np.ndarray
    capacity: int

    def copy_twice(self) -> None:
        """The write baseline: the chunk copied twice (row + mirror)."""
        self._twice[0] = self.chunk
        self._twice[1] = self.chunk

    def __post_init__(self) -> None:
        self._twice = np.empty((2, *self.chunk.shape), self.chunk.dtype)


@contextlib.contextmanager
def filled_ring(n_ch: int, srate: float, seconds: float) -> Iterator[FilledRing]:
    """A filled ring of ``seconds * srate`` rows x ``n_ch`` float32 and a view of it.

    Filled with :data:`CHUNK_S` chunks of noise (wrapped at least once), read
    through a :class:`~dpshm.shm.view.SharedStreamView`; unlinked on exit.
    """
    from dpshm.shm.ring import SharedRing
    from dpshm.shm.view import SharedStreamView

    capacity = round(srate * seconds)
    chunk_n = max(1, round(srate * CHUNK_S))
    chunk = np.random.default_rng(0).standard_normal((chunk_n, n_ch)).astype(np.float32)
    ts = np.arange(chunk_n, dtype=np.float64)
    name = f"bench{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with SharedRing.create(name, n_ch, capacity, "float32", srate=srate) as ring:
        for _ in range(capacity // chunk_n + 1):
            ring.write(chunk, ts)
        with SharedStreamView(name) as view:
            yield FilledRing(ring, view, chunk, ts, capacity)


def process_cpu_s(pid: int) -> float:
    """On-CPU seconds of process ``pid`` so far (all its threads).

    Linux: the scheduler's nanosecond counts (``/proc/<pid>/task/*/schedstat``);
    elsewhere psutil's user+system time (10 ms ticks: coarse for short runs).
    Returns 0.0 once the process is gone.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = None
    if tids and os.path.exists(f"/proc/{pid}/task/{tids[0]}/schedstat"):
        total = 0
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):  # the thread ended meanwhile
                pass
        return total / 1e9
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


def percentiles(samples: Any, scale: float = 1.0) -> tuple[float, float]:
    """``(p50, p99)`` of ``samples`` times ``scale`` (``nan`` when empty)."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(a, [50, 99]) * scale
    return float(p50), float(p99)


@contextlib.contextmanager
def _logging_untouched() -> Iterator[None]:
    """Undo what ``logging.config.dictConfig`` changes.

    Restores the root handlers and level and every logger's ``disabled`` flag;
    handlers added meanwhile are closed.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    disabled = {
        name: lg.disabled
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    try:
        yield
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger):
                lg.disabled = disabled.get(name, False)


def import_original(module: str) -> ModuleType | None:
    """Import a module of the original dareplane-utils, or ``None`` if it is absent.

    The original configures the root logger when imported (a console handler, a
    socket handler to port 9020, every existing logger disabled); that is undone
    here so that importing the baseline changes nothing for the caller.
    """
    with _logging_untouched():
        try:
            return importlib.import_module(module)
        except ImportError:
            return None


def child_env(**extra: str) -> dict[str, str]:
    """Environment for benchmark subprocesses, plus ``extra`` variables.

    They import this very ``dpshm``, also from a checkout that is not installed.
    """
    root = str(Path(__file__).resolve().parents[2])
    pp = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + pp if pp else ""), **extra}
