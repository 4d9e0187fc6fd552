r"""Framing of the Dareplane command wire: where one command ends.

The rule (docs/server.md, "Framing rule")
-----------------------------------------
* ``;`` always ends a command (the Dareplane control room reserves it).
* ``\n`` and ``\r\n`` end a command, except inside a JSON value that is
  still open (``ECHO|{\n "a": 2\n}`` is one command).
* Bytes without a terminator are a *pending* command. :meth:`CommandFramer.pending`
  says what may be done with it without a terminator:

  ``NOW``
      nothing that may follow can change it: ``NAME|...{json}`` whose JSON
      value is closed, or a built-in (``UP``, ``STOP``...) that is not the
      beginning of another command's name;
  ``AFTER_IDLE``
      a module command without payload (``START``, ``START|``, ``START|a|b|``)
      that is not the beginning of another command's name, or (with a
      module's own ``msg_interpreter``) ``NAME|<text>``, *received alone in
      one segment* (0.0.21 clients send one command per send): executed once
      the sender paused. Received in several segments, or after a terminated
      command in the same segment, it is ``WAIT``;
  ``WAIT``
      anything else (the beginning of a longer name such as ``STOP`` when
      ``STOP_WORKER`` exists, an open JSON value, an unknown name): never
      executed by a pause, only by a terminator or at end of stream.

The framer is incremental: every received byte is examined once (a C-level
regular-expression scan; Python work only per JSON bracket or quote), so the
cost is linear in the bytes received however they are segmented.

Other protocols
---------------
:func:`sniff` recognises the first bytes of an HTTP request, a TLS
ClientHello, an SSH greeting or binary data, so the server can close such a
connection before executing anything.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

__all__ = [
    "AFTER_IDLE",
    "FOREIGN",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_BYTES",
    "NOW",
    "UNDECIDED",
    "WAIT",
    "CommandFramer",
    "FramingError",
    "sniff",
]

#: Largest pending (unterminated) command, bytes.
MAX_MESSAGE_BYTES = 1 << 20
#: Deepest JSON nesting accepted in a payload.
MAX_JSON_DEPTH = 64
#: Longest command name considered (longer: not a command).
MAX_NAME = 256

NONE, NOW, AFTER_IDLE, WAIT = 0, 1, 2, 3

# scanner states: command name, payload outside JSON, inside JSON, inside a JSON string
_NAME, _ARGS, _JSON, _STRING = range(4)
_SPECIAL = (
    re.compile(rb"[|;\n]"),
    re.compile(rb"[{\[;\n]"),
    re.compile(rb'[{}\[\]";]'),  # a newline inside open JSON ends nothing
    re.compile(rb'["\\;]'),
)
_TERMINATOR = re.compile(rb"[;\n]")
# how the payload ends (ignoring whitespace): after a '|', after a closed JSON value, else
_END_PIPE, _END_VALUE, _END_OTHER = range(3)


@dataclass(frozen=True)
class FramingError:
    """A problem found while framing (reported to the client as ``ERROR``)."""

    text: str


class CommandFramer:
    """Split one connection's byte stream into commands (see the module docstring).

    Parameters
    ----------
    max_bytes : int
        Largest pending command; beyond it :meth:`feed` reports a
        :class:`FramingError` and discards input up to the next terminator.
    max_depth : int
        Deepest JSON nesting; beyond it the same.
    """

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES, max_depth: int = MAX_JSON_DEPTH):
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.discarding = False
        self._reset()

    def _reset(self) -> None:
        self.buffer = bytearray()
        self._state = _NAME
        self._depth = 0
        self._escape = False
        self._name: bytes | None = None
        self._end = _END_OTHER
        self._fresh = True  # the pending command is all of the latest segment
        self._terminated = False

    def feed(self, data: bytes) -> list[bytes | FramingError]:
        """Add received bytes; return the complete commands and errors, in order.

        Commands are stripped of whitespace and terminator; blank ones are
        skipped.
        """
        out: list[bytes | FramingError] = []
        buf = self.buffer
        fresh = not (buf and (len(buf) > MAX_NAME or buf.strip()))
        self._terminated = False
        if (
            self._state <= _ARGS
            and not self.discarding
            and len(buf) + len(data) < self.max_bytes
            and b"{" not in data
            and b"[" not in data
        ):
            # no JSON in sight: every ';' and newline ends a command; split in C
            parts = _TERMINATOR.split(data)
            if len(parts) > 1:
                first = bytes(buf + parts[0]).strip()
                if first:
                    out.append(first)
                out += [c for c in map(bytes.strip, parts[1:-1]) if c]
                self._reset()
                out += self.feed(parts[-1])
                self._fresh = False
                return out
        i, n = 0, len(data)
        while i < n:
            if self.discarding:
                m = _TERMINATOR.search(data, i)
                if m is None:
                    break
                self.discarding = False
                i = m.end()
                continue
            if self._escape:  # a backslash ended the previous segment inside a string
                self._escape = False
                self.buffer += data[i : i + 1]
                i += 1
                continue
            m = _SPECIAL[self._state].search(data, i)
            j = n if m is None else m.start()
            if len(self.buffer) + (j - i) >= self.max_bytes:
                out.append(
                    FramingError(
                        f"command exceeds {self.max_bytes} bytes without a ';' or newline "
                        "terminator; discarded up to the next terminator"
                    )
                )
                self._reset()
                self.discarding = True
                i = j
                continue
            if self._state == _ARGS and j > i:
                span = data[i:j].rstrip()
                if span:
                    self._end = _END_PIPE if span.endswith(b"|") else _END_OTHER
            self.buffer += data[i:j]
            if m is None:
                break
            i = j + 1
            self._special(data[j], out)
            if self._escape and i < n:
                self._escape = False
                self.buffer += data[i : i + 1]
                i += 1
        # a lone command in its own segment (0.0.21: one send, one command), not the
        # tail of a stream of terminated ones nor the continuation of an earlier segment
        self._fresh = fresh and not self._terminated
        return out

    def _special(self, c: int, out: list[bytes | FramingError]) -> None:
        if c in b";\n":
            self._emit(out)
            return
        self.buffer.append(c)
        state = self._state
        if state == _NAME:  # '|'
            name = bytes(self.buffer[:-1]).strip()
            self._name = name if len(name) <= MAX_NAME else None
            self._state, self._end = _ARGS, _END_PIPE
        elif state == _STRING:
            if c == 0x22:  # '"'
                self._state = _JSON
            else:  # backslash: the next byte is escaped
                self._escape = True
        elif c == 0x22:
            self._state = _STRING
        elif c in b"{[":
            self._depth += 1
            self._state = _JSON
            if self._depth > self.max_depth:
                out.append(
                    FramingError(
                        f"JSON payload nested deeper than {self.max_depth} levels; "
                        "discarded up to the next terminator"
                    )
                )
                self._reset()
                self.discarding = True
        else:  # '}' or ']' inside JSON
            self._depth -= 1
            if self._depth == 0:
                self._state, self._end = _ARGS, _END_VALUE

    def _emit(self, out: list[bytes | FramingError]) -> None:
        raw = bytes(self.buffer).strip()
        self._reset()
        self._terminated = True
        if raw:
            out.append(raw)

    def pending(
        self,
        known: Collection[str],
        builtins: Collection[str] = (),
        *,
        lenient: bool = False,
        auth: bool = False,
        eof: bool = False,
    ) -> int:
        """Classify the pending command: ``NONE``, ``NOW``, ``AFTER_IDLE`` or ``WAIT``.

        Parameters
        ----------
        known : Collection[str]
            Every command name the server serves (built-ins included).
        builtins : Collection[str]
            The payload-free built-ins.
        lenient : bool
            A module's own interpreter reads the payload (``NAME|text`` is complete).
        auth : bool
            ``AUTH|<token>`` is a command.
        eof : bool
            The sender closed: nothing more can follow (``AFTER_IDLE`` becomes
            ``NOW``, and a name that begins a longer one is complete).
        """
        if self.discarding:
            return WAIT
        buf = self.buffer
        if not buf or (len(buf) <= MAX_NAME and not buf.strip()):
            return NONE
        if self._state in (_JSON, _STRING):
            return WAIT
        if self._state == _NAME:
            if len(buf) > MAX_NAME:
                return WAIT
            name = bytes(buf).strip().decode("ascii", "replace")
            if name not in known:
                return WAIT
            if eof:
                return NOW
            if any(k != name and k.startswith(name) for k in known):
                return WAIT
            return NOW if name in builtins else self._idle()
        name = (self._name or b"").decode("ascii", "replace")
        if name == "AUTH" and auth:
            return NOW if eof else self._idle()
        if name not in known:
            return WAIT
        if self._end == _END_VALUE or (self._end == _END_PIPE and name in builtins):
            return NOW
        if self._end == _END_PIPE or lenient:
            return NOW if eof else self._idle()
        return WAIT

    def _idle(self) -> int:
        # one send, one command (0.0.21): a pause ends it only if it came in one segment;
        # a command dribbled in over several segments waits for its terminator
        return AFTER_IDLE if self._fresh else WAIT

    def take(self) -> bytes:
        """Remove and return the pending command (stripped)."""
        raw = bytes(self.buffer).strip()
        self._reset()
        return raw

    def drop(self) -> bytes:
        """Discard the pending command (and end discarding); return its first 80 bytes."""
        head = bytes(self.buffer[:80]).strip()
        self._reset()
        self.discarding = False
        return head


UNDECIDED = "undecided"
#: How the server's log and reply name what :func:`sniff` found.
FOREIGN = {
    "HTTP": "an HTTP request",
    "TLS": "a TLS handshake",
    "SSH": "an SSH greeting",
    "binary": "binary data",
}
_HTTP_METHODS = (
    b"GET",
    b"POST",
    b"PUT",
    b"HEAD",
    b"OPTIONS",
    b"DELETE",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
    b"PRI",
    b"PROPFIND",
)
_GREETINGS = (*tuple((m + b" ", "HTTP") for m in _HTTP_METHODS), (b"SSH-", "SSH"))
#: Enough bytes to tell every greeting in :func:`sniff` apart.
SNIFF_BYTES = max(len(g) for g, _ in _GREETINGS)


def sniff(prefix: bytes) -> str | None:
    """Recognise another protocol from the first bytes of a connection.

    Parameters
    ----------
    prefix : bytes
        The first bytes received.

    Returns
    -------
    str | None
        ``"HTTP"`` (a request line: method and space), ``"TLS"`` (a
        handshake record), ``"SSH"``, ``"binary"`` (a control character
        first; commands are text), ``None`` for a Dareplane command, or
        :data:`UNDECIDED` while ``prefix`` is the beginning of a greeting.
    """
    if not prefix:
        return UNDECIDED
    first = prefix[0]
    if first == 0x16:
        return "TLS"
    if first == 0x7F or (first < 0x20 and first not in b"\t\r\n"):
        return "binary"
    undecided = False
    for greeting, proto in _GREETINGS:
        if prefix.startswith(greeting):
            return proto
        if greeting.startswith(prefix):
            undecided = True
    return UNDECIDED if undecided else None
