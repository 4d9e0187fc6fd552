"""Mock LSL outlets for trying dpshm out (``dpshm mock``, ``dpshm demo``).

:class:`MockOutlets` publishes, from one background thread,

* a multi-channel float32 signal (``type="EEG"``): channel ``c`` is a sine of
  ``(c % 10) + 5`` Hz plus a little noise, pushed in chunks of ``chunk_s``
  seconds on absolute deadlines (no drift), and
* an irregular string marker stream (``type="Markers"``) cycling through
  ``trial_start``, ``stimulus``, ``response`` every ``marker_every_s`` seconds.

Outlets are created through :mod:`dpshm.lsl` (the only module importing pylsl).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from dpshm._logging import library_logger
from dpshm._threads import join_thread
from dpshm.errors import ConfigError

log = library_logger(__name__)

DEFAULT_SIGNAL_NAME = "MockEEG"
DEFAULT_MARKER_NAME = "MockMarkers"
DEFAULT_CHANNELS = 8
DEFAULT_RATE = 250.0
DEFAULT_CHUNK_S = 0.01
DEFAULT_MARKER_EVERY_S = 1.0
MAX_CHANNELS = 1024
MAX_RATE = 100_000.0  # Hz; a 30 kHz microelectrode recording fits
MARKERS = ("trial_start", "stimulus", "response")


@dataclass(frozen=True)
class MockSpec:
    """What :class:`MockOutlets` publishes."""

    name: str = DEFAULT_SIGNAL_NAME
    channels: int = DEFAULT_CHANNELS
    rate: float = DEFAULT_RATE
    chunk_s: float = DEFAULT_CHUNK_S
    markers: bool = True
    marker_name: str = DEFAULT_MARKER_NAME
    marker_every_s: float = DEFAULT_MARKER_EVERY_S
    source_id: str = ""

    def __post_init__(self) -> None:
        # each message names the field as the command line does (`dpshm mock --rate`)
        bad = []
        if not isinstance(self.channels, int) or not 1 <= self.channels <= MAX_CHANNELS:
            bad.append(f"channels (--channels) must be 1 .. {MAX_CHANNELS}, got {self.channels!r}")
        if not _number_in(self.rate, 0.0, MAX_RATE):
            bad.append(f"rate (--rate) must be > 0 and <= {MAX_RATE:g} Hz, got {self.rate!r}")
        if not _number_in(self.chunk_s, 0.0, 1.0):
            bad.append(f"chunk_s must be > 0 and <= 1 s, got {self.chunk_s!r}")
        if not _number_in(self.marker_every_s, 0.0, 3600.0):
            bad.append(f"marker_every_s must be > 0 and <= 3600 s, got {self.marker_every_s!r}")
        if not str(self.name).strip():
            bad.append("name (--name) must not be empty")
        if self.markers and not str(self.marker_name).strip():
            bad.append("marker_name (--marker-name) must not be empty (or use --no-markers)")
        if self.markers and self.marker_name == self.name:
            bad.append(
                f"the signal and the marker stream are both named {self.name!r}; "
                "give --marker-name another name"
            )
        if bad:
            raise ConfigError("mock outlets: " + "; ".join(bad))


def _number_in(value: object, low: float, high: float) -> bool:
    """``low < value <= high`` for a real, finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and low < value <= high


class MockOutlets:
    """A mock signal outlet and an optional marker outlet, pushed from a thread.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    ``pushed`` counts the signal samples pushed so far.
    """

    _thread: threading.Thread | None = None

    def __init__(self, spec: MockSpec | None = None):
        self.spec = spec or MockSpec()
        from dpshm import lsl  # lazy: `dpshm --help` must not load pylsl

        sid = self.spec.source_id or f"dpshm-mock-{self.spec.name}"
        self._stop = threading.Event()
        self.pushed = 0
        self.markers_pushed = 0
        self.signal = lsl.Outlet(
            self.spec.name,
            "EEG",
            self.spec.channels,
            self.spec.rate,
            "float32",
            source_id=sid,
            channel_names=[f"mock{i + 1}" for i in range(self.spec.channels)],
        )
        self.marker = None
        if self.spec.markers:
            try:
                self.marker = lsl.Outlet(
                    self.spec.marker_name, "Markers", 1, 0.0, "string", source_id=sid + "-markers"
                )
            except BaseException:
                self.signal.close()
                raise

    def start(self) -> MockOutlets:
        """Start pushing (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dpshm-mock", daemon=True)
            self._thread.start()
            log.info(
                "mock outlets: %r %d ch @ %g Hz%s",
                self.spec.name, self.spec.channels, self.spec.rate,
                f", markers {self.spec.marker_name!r}" if self.marker else "",
            )  # fmt: skip
        return self

    def _run(self) -> None:
        spec = self.spec
        n = max(1, round(spec.chunk_s * spec.rate))
        period = n / spec.rate
        freqs = (np.arange(spec.channels) % 10 + 5.0).astype(np.float64)
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        next_marker = t0 + spec.marker_every_s
        k = 0
        i = 0
        while not self._stop.is_set():
            deadline = t0 + (k + 1) * period
            delay = deadline - time.perf_counter()
            if delay > 0 and self._stop.wait(delay):
                break
            t = (i + np.arange(n))[:, None] / spec.rate
            chunk = np.sin(2 * np.pi * freqs * t) + 0.05 * rng.standard_normal((n, spec.channels))
            self.signal.push_chunk(chunk.astype(np.float32))
            i += n
            k += 1
            self.pushed = i
            if self.marker is not None and time.perf_counter() >= next_marker:
                self.marker.push_sample([MARKERS[self.markers_pushed % len(MARKERS)]])
                self.markers_pushed += 1
                next_marker += spec.marker_every_s

    def stop(self) -> None:
        """Stop pushing (bounded join); the outlets stay open, ``pushed`` is final."""
        self._stop.set()
        join_thread(self._thread, 2.0)

    def close(self) -> None:
        """Stop pushing and close the outlets (idempotent)."""
        self.stop()
        for outlet in (self.signal, self.marker):
            if outlet is not None:
                outlet.close()
        self.marker = None

    def __enter__(self) -> MockOutlets:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
