"""A log line per kind of event at a bounded rate (a token bucket per key).

A flood of junk input, refused connections or wrong tokens must not flood the
log (nor, through a socket handler, the control room's log server). Each key
gets ``burst`` lines at once and ``rate`` lines per second after that; the
next line let through says how many were suppressed meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class RateLimitedLog:
    """Log through ``logger`` at most ``burst`` lines at once, ``rate`` per second, per key.

    Parameters
    ----------
    logger : logging.Logger
        Where lines go.
    rate : float
        Lines per second and key, sustained.
    burst : int
        Lines per key allowed at once.
    """

    def __init__(self, logger: logging.Logger, rate: float = 1.0, burst: int = 10) -> None:
        self.logger = logger
        self.rate = float(rate)
        self.burst = float(burst)
        self._lock = threading.Lock()
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill, suppressed]

    def log(self, level: int, key: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Log ``msg % args`` unless ``key`` is over its rate; return whether it was logged."""
        if not self.logger.isEnabledFor(level):
            return False
        now = time.monotonic()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = [self.burst, now, 0.0]
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
            if b[0] < 1.0:
                b[2] += 1
                return False
            b[0] -= 1.0
            suppressed, b[2] = int(b[2]), 0.0
        if suppressed:
            msg += " (%d similar lines suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True
