"""Helpers shared by the tests (import as ``from helpers import ...``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float = 5.0, interval: float = 0.005) -> T:
    """Call ``pred`` until it returns something truthy; return that value.

    Raises ``TimeoutError`` naming the predicate when ``timeout`` runs out.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            name = getattr(pred, "__name__", repr(pred))
            raise TimeoutError(f"condition {name!r} not met within {timeout} s")
        time.sleep(interval)
