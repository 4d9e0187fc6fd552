"""Declared worker parameters: which ``kwargs`` a client may set, with types and bounds.

A worker's ``[workers.NAME.params]`` table declares every key a client may send
in ``START_WORKER``'s ``"kwargs"``; anything else is refused. Without the table
a client may set nothing (the declared ``kwargs`` are used as they are)::

    [workers.bandpower.params]
    period_s = { type = "float", min = 0.02, max = 10.0 }
    band     = { type = "list", items = "float", min_len = 2, max_len = 2, min = 0.5, max = 500.0 }
    outlet   = { type = "stream_name" }
    label    = { type = "str", max_len = 40, choices = ["a", "b"] }
    out      = { type = "filename" }

Types
-----
``int``, ``float``
    ``min`` and ``max`` are required (inclusive); NaN and infinities are refused.
``bool``
    ``true`` / ``false`` only.
``str``
    At most ``max_len`` characters (default :data:`DEFAULT_MAX_LEN`), no control
    characters; ``choices`` optional.
``filename``
    A bare file name (letters, digits, ``_``, ``-``, ``.``; no ``/``, not
    starting with ``.``): the worker decides the directory (e.g. from a declared,
    not client-settable, kwarg).
``stream_name``
    The name of a stream the worker will publish. The supervisor refuses a name
    another stream already holds (see :mod:`dpshm.control.workers`).
``list``
    ``items`` is ``int``, ``float`` or ``str``; ``min_len``/``max_len`` (the
    latter required, at most :data:`MAX_LIST_LEN`); ``min``/``max`` bound
    numeric items and are required for them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dpshm.errors import ConfigError

TYPES = ("int", "float", "bool", "str", "filename", "stream_name", "list")
ITEM_TYPES = ("int", "float", "str")
DEFAULT_MAX_LEN = 256
MAX_LIST_LEN = 1024
STREAM_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_FILENAME_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,99}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_KEYS = {"type", "min", "max", "max_len", "min_len", "choices", "items"}


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter (see the module docstring)."""

    name: str
    type: str
    min: float | None = None
    max: float | None = None
    max_len: int | None = None
    min_len: int = 0
    choices: tuple[Any, ...] | None = None
    items: str | None = None

    def describe(self) -> str:
        """Short human form, e.g. ``float 0.02..10``."""
        if self.type == "list":
            rng = f" {self.min:g}..{self.max:g}" if self.items in ("int", "float") else ""
            return f"list of {self.min_len}..{self.max_len} {self.items}{rng}"
        if self.type in ("int", "float"):
            return f"{self.type} {self.min:g}..{self.max:g}"
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        if self.type == "str":
            return f"str of at most {self.max_len} characters"
        return self.type

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``LIST_WORKERS``)."""
        out: dict[str, Any] = {"type": self.type}
        for key in ("min", "max", "max_len", "items", "choices"):
            v = getattr(self, key)
            if v is not None:
                out[key] = list(v) if key == "choices" else v
        if self.type == "list":
            out["min_len"] = self.min_len
        return out


def _num(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: '{key}' must be a finite number, got {value!r}.")
    return value


def parse_spec(name: str, data: Any, where: str) -> ParamSpec:
    """Build a :class:`ParamSpec` from its TOML table; ``where`` names it in errors."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f'{where} must be a table such as {{ type = "float", min = 0, max = 1 }}, got {data!r}.'
        )
    extra = sorted(set(data) - _KEYS)
    if extra:
        raise ConfigError(f"{where}: unknown keys {extra}; allowed are {sorted(_KEYS)}.")
    kind = data.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}: 'type' must be one of {list(TYPES)}, got {kind!r}.")
    items = data.get("items")
    numeric = kind in ("int", "float") or (kind == "list" and items in ("int", "float"))
    if kind == "list" and items not in ITEM_TYPES:
        raise ConfigError(f"{where}: a list needs 'items', one of {list(ITEM_TYPES)}.")
    lo = hi = None
    if numeric:
        if "min" not in data or "max" not in data:
            raise ConfigError(f"{where}: a {kind} parameter needs both 'min' and 'max'.")
        lo, hi = _num(where, "min", data["min"]), _num(where, "max", data["max"])
        if lo > hi:
            raise ConfigError(f"{where}: 'min' ({lo}) is larger than 'max' ({hi}).")
    max_len = data.get("max_len")
    if kind == "list" and max_len is None:
        raise ConfigError(f"{where}: a list needs 'max_len' (at most {MAX_LIST_LEN}).")
    if kind in ("str", "list") and max_len is None:
        max_len = DEFAULT_MAX_LEN
    limit = MAX_LIST_LEN if kind == "list" else 65536
    if max_len is not None and (
        isinstance(max_len, bool) or not isinstance(max_len, int) or not 1 <= max_len <= limit
    ):
        raise ConfigError(f"{where}: 'max_len' must be an integer within 1..{limit}.")
    min_len = data.get("min_len", 0)
    if isinstance(min_len, bool) or not isinstance(min_len, int) or min_len < 0:
        raise ConfigError(f"{where}: 'min_len' must be an integer >= 0, got {min_len!r}.")
    choices = data.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise ConfigError(f"{where}: 'choices' must be a list, got {choices!r}.")
    return ParamSpec(
        name=name,
        type=kind,
        min=lo,
        max=hi,
        max_len=max_len,
        min_len=min_len,
        choices=tuple(choices) if choices is not None else None,
        items=items,
    )


def _scalar(spec: ParamSpec, kind: str, value: Any, label: str) -> Any:
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, got {value!r}.")
        return value
    if kind in ("int", "float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "int" and isinstance(value, float):
            ok = value.is_integer() if ok and math.isfinite(value) else False
        if not ok or not math.isfinite(value):
            raise ConfigError(f"{label} must be {spec.describe()}, got {value!r}.")
        if not spec.min <= value <= spec.max:  # type: ignore[operator]
            raise ConfigError(f"{label} must be within {spec.min:g}..{spec.max:g}, got {value!r}.")
        return int(value) if kind == "int" else float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{label} must be a string, got {value!r}.")
    if kind == "filename" and not _FILENAME_RE.match(value):
        raise ConfigError(
            f"{label} must be a bare file name (letters, digits, '_', '-', '.'; no '/', "
            f"not starting with '.'; at most 100 characters), got {value!r}."
        )
    if kind == "stream_name" and not STREAM_NAME_RE.match(value):
        raise ConfigError(
            f"{label} must be a stream name of 1-64 letters, digits, '_', '-', '.', got {value!r}."
        )
    if kind == "str":
        if len(value) > (spec.max_len or DEFAULT_MAX_LEN):
            raise ConfigError(
                f"{label} has {len(value)} characters; at most {spec.max_len} are allowed."
            )
        if _CONTROL_RE.search(value):
            raise ConfigError(f"{label} contains control characters: {value!r}.")
    return value


def check_param(spec: ParamSpec, value: Any, label: str) -> Any:
    """Check ``value`` against ``spec``; return it normalised (ints stay ints).

    Raises
    ------
    ConfigError
        Naming ``label``, the value and what is allowed.
    """
    if spec.type == "list":
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{label} must be a {spec.describe()}, got {value!r}.")
        if not spec.min_len <= len(value) <= (spec.max_len or MAX_LIST_LEN):
            raise ConfigError(
                f"{label} must have {spec.min_len}..{spec.max_len} items, got {len(value)}."
            )
        out: Any = [_scalar(spec, spec.items or "str", v, f"{label}[{i}]") for i, v in
                    enumerate(value)]  # fmt: skip
    else:
        out = _scalar(spec, spec.type, value, label)
    if spec.choices is not None and out not in spec.choices:
        raise ConfigError(f"{label} must be one of {list(spec.choices)}, got {value!r}.")
    return out


def check_kwargs(
    worker: str, params: Mapping[str, ParamSpec], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Check a client's kwargs for ``worker`` against its declared ``params``.

    Raises
    ------
    ConfigError
        A key that is not declared (the message lists the declared ones and
        their ranges), or a value outside its declaration.
    """
    extra = sorted(k for k in kwargs if k not in params)
    if extra:
        allowed = {k: p.describe() for k, p in params.items()}
        raise ConfigError(
            f"worker {worker!r} does not let a client set {extra}; settable: "
            f"{allowed or 'nothing'} (declare more in [workers.{worker}.params])."
        )
    return {k: check_param(params[k], v, f"{worker}: kwargs {k!r}") for k, v in kwargs.items()}
