r"""The Dareplane command wire: parsing one command, and the ``ERROR`` reply.

Where a command ends is :mod:`dpshm.dareplane.framing`'s business.

Parsing
-------
``PCOMM``, ``PCOMM|`` and ``PCOMM|{json object}`` give keyword arguments; the
0.0.21 form ``PCOMM|a|b|{json}`` (or ``PCOMM|a|b|``) also gives positional
string arguments.

Replies
-------
A refused command is answered with one line, :func:`error_line`: ``ERROR``,
a space, what went wrong (the value and the fix), ``\n``. Every server and
command of dpshm builds it there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dpshm.errors import ProtocolError

__all__ = ["ERROR_PREFIX", "Command", "error_line", "parse_command"]

#: How every refusal reply begins.
ERROR_PREFIX = "ERROR "


def error_line(problem: object) -> str:
    r"""The reply to a refused command: ``ERROR <problem>`` on one line, ``\n``-terminated.

    Whitespace in ``problem`` (newlines included) collapses to single spaces,
    so a client reading lines always gets exactly one.
    """
    return ERROR_PREFIX + " ".join(str(problem).split()) + "\n"


@dataclass(frozen=True)
class Command:
    """One parsed command.

    Attributes
    ----------
    name : str
        The primary command (``PCOMM``).
    args : tuple[str, ...]
        Positional arguments (0.0.21 form), usually empty.
    kwargs : dict
        Keyword arguments from the JSON payload.
    raw : bytes
        The command as received, without terminator.
    """

    name: str
    args: tuple[str, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    raw: bytes = b""


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError(
            f"command is not valid UTF-8 (byte {raw[err.start : err.start + 1]!r} at "
            f"offset {err.start} of {raw[:60]!r}); send ASCII commands with UTF-8 JSON payloads"
        ) from None


def parse_command(raw: bytes) -> Command:
    """Parse one unterminated command.

    Parameters
    ----------
    raw : bytes
        The command bytes without its terminator.

    Returns
    -------
    Command

    Raises
    ------
    ProtocolError
        Invalid UTF-8, a non-ASCII command name, or a payload that is not a JSON
        object.
    """
    text = _decode(raw).strip()
    parts = text.split("|")
    name = parts[0].strip()
    if not name.isascii():
        raise ProtocolError(
            f"command name {name[:60]!r} contains non-ASCII characters; names are ASCII"
        )
    if len(parts) == 1:
        return Command(name, (), {}, raw)
    payload = parts[-1].strip()
    args = tuple(parts[1:-1])
    if payload == "":
        return Command(name, args, {}, raw)
    try:
        kwargs = json.loads(payload)
    except RecursionError:
        raise ProtocolError(
            f"JSON payload for {name!r} is nested too deeply to parse; flatten it"
        ) from None
    except json.JSONDecodeError as err:
        raise ProtocolError(
            f"bad JSON payload for {name!r}: {err.msg} at position {err.pos} in "
            f'{payload[:80]!r}; send {name}|{{"key": value}}'
        ) from None
    if not isinstance(kwargs, dict):
        raise ProtocolError(
            f"JSON payload for {name!r} is a {type(kwargs).__name__}, not an object of "
            f'keyword arguments: {payload[:80]!r}; send {name}|{{"key": value}}'
        )
    return Command(name, args, kwargs, raw)
