r"""The Dareplane command wire: framing and parsing.

Framing rule (see docs/server.md)
---------------------------------
``;``, ``\n`` and ``\r\n`` all terminate a command. Bytes after the last
terminator stay buffered. A non-empty unterminated remainder is dispatched
at once if nothing that can follow may change its meaning (``PCOMM|{...}`` with
a complete JSON object, or a payload-free built-in such as ``UP`` that is no
prefix of another command name); otherwise when no further byte arrived for
``idle_s`` (a few ms) *and* it looks complete (its name is a known command and
its payload is empty or valid JSON); an incomplete
remainder is dispatched anyway (and then usually answered with ``ERROR``) after
``stale_s`` without further bytes. Empty commands are ignored.

Parsing
-------
``PCOMM``, ``PCOMM|`` and ``PCOMM|{json object}`` give keyword arguments; the
0.0.21 form ``PCOMM|a|b|{json}`` (or ``PCOMM|a|b|``) also gives positional
string arguments.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from dpshm.errors import ProtocolError

__all__ = ["Command", "CommandFramer", "completeness", "parse_command"]

MAX_MESSAGE_BYTES = 1 << 20
#: What ends a command (:class:`CommandFramer`): each of these, always.
TERMINATORS = (b";", b"\n", b"\r\n")


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


INCOMPLETE, COMPLETE_AFTER_IDLE, COMPLETE_NOW = 0, 1, 2


def completeness(raw: bytes, known: Collection[str], payload_free: Collection[str] = ()) -> int:
    """Classify an unterminated remainder.

    Returns
    -------
    int
        ``COMPLETE_NOW`` if nothing that may follow can change its meaning (a
        known command with a JSON-object payload, or a payload-free built-in
        that is no prefix of another known name); ``COMPLETE_AFTER_IDLE`` if it
        is a whole command once the sender pauses; ``INCOMPLETE`` otherwise.
    """
    try:
        cmd = parse_command(raw)
    except ProtocolError:
        return INCOMPLETE
    if cmd.name not in known:
        return INCOMPLETE
    text = raw.decode("utf-8").strip()
    if cmd.kwargs or text.endswith("}"):
        return COMPLETE_NOW
    if (
        cmd.name in payload_free
        and "|" not in text
        and not any(k != cmd.name and k.startswith(cmd.name) for k in known)
    ):
        return COMPLETE_NOW
    return COMPLETE_AFTER_IDLE


class CommandFramer:
    """Split a byte stream into commands (see the module docstring).

    Parameters
    ----------
    max_bytes : int
        Largest unterminated message; beyond it :meth:`feed` reports an
        oversize error and discards input up to the next terminator.
    """

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.buffer = bytearray()
        self.discarding = False

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add received bytes.

        Returns
        -------
        commands : list[bytes]
            Complete, non-empty commands in order (terminators removed).
        oversized : int
            Number of bytes discarded because a message exceeded ``max_bytes``
            (0 if none); the caller reports it once.
        """
        self.buffer += data
        buf = bytes(self.buffer).replace(b"\r\n", b"\n").replace(b"\n", b";")
        *complete, rest = buf.split(b";")
        if self.discarding:
            if complete:
                complete = complete[1:]  # the tail of the oversized message
                self.discarding = False
            else:
                rest = b""
        oversized = 0
        if len(rest) > self.max_bytes:
            oversized = len(rest)
            self.discarding = True
            rest = b""
        self.buffer = bytearray(rest)
        commands = [c for c in complete if c.strip()]
        return commands, oversized

    def take_remainder(self) -> bytes:
        """Remove and return the unterminated remainder (stripped)."""
        rest = bytes(self.buffer).strip()
        self.buffer.clear()
        return rest

    @property
    def pending(self) -> bool:
        """Whether a non-blank unterminated remainder is buffered."""
        return bool(bytes(self.buffer).strip())
