"""Ranges of every size and interval of the configuration, and their one check.

:data:`BOUNDS` is the table (key -> :class:`Bound`); :func:`check_value` is
the one function that checks a value against it, whether it comes from the
TOML file or from a command-line flag (:mod:`dpshm.config` calls it for
both), so ``dpshm up --buffer-s`` and ``[supervisor] buffer_s`` accept exactly
the same values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dpshm.errors import ConfigError


@dataclass(frozen=True)
class Bound:
    """Allowed range of one numeric field (inclusive), and how to name it."""

    kind: type
    lo: float
    hi: float
    unit: str = ""
    flag: str | None = None  # the command-line flag that sets it, if any

    def describe(self) -> str:
        """The allowed range in words, for help texts and error messages."""
        unit = f" {self.unit}" if self.unit else ""
        if self.kind is int:
            return f"{int(self.lo)}..{int(self.hi)}{unit}"
        return f"{self.lo:g}..{self.hi:g}{unit}"


#: Every bounded field: key -> range. TOML keys and flags are checked by
#: :func:`check_value` against this one table.
BOUNDS: Mapping[str, Bound] = MappingProxyType(
    {
        "buffer_s": Bound(float, 0.1, 3600.0, "s", "--buffer-s"),
        "irregular_samples": Bound(int, 16, 1_000_000, "samples", "--irregular-samples"),
        "string_width": Bound(int, 8, 65536, "bytes"),
        "resolve_interval_s": Bound(float, 0.1, 60.0, "s", "--resolve-interval-s"),
        "max_subscribers": Bound(int, 1, 65536, "subscriptions", "--max-subscribers"),
        "port": Bound(int, 0, 65535, "", "--port"),
        "max_restarts": Bound(int, 0, 100),
        "backoff_s": Bound(float, 0.01, 3600.0, "s"),
    }
)
#: The LSL inlet's own queue (``max_buflen``), independent of the ring's length.
MAX_INLET_BUFLEN_S = 360


def check_value(key: str, value: Any, where: str | None = None) -> Any:
    """Check one bounded field (see :data:`BOUNDS`); return it as its type.

    Parameters
    ----------
    key : str
        Field name, e.g. ``"buffer_s"``.
    value : Any
        The value from the file or the flag.
    where : str, optional
        How to name it in the error (file, line and key; default: its flag).

    Raises
    ------
    ConfigError
        Wrong type, NaN, an infinity, or outside the range; one line naming
        ``where``, the value and the allowed range.
    """
    b = BOUNDS[key]
    where = where or b.flag or key
    kind = "an integer" if b.kind is int else "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and b.kind is int and isinstance(value, float):
        ok = False
    if not ok:
        raise ConfigError(
            f"{where} must be {kind} within {b.describe()}, got {value!r} ({type(value).__name__})."
        )
    if not math.isfinite(value) or not b.lo <= value <= b.hi:
        raise ConfigError(f"{where} must be within {b.describe()}, got {value!r}.")
    return b.kind(value)
