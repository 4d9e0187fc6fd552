"""Waking a thread that blocks in ``select``/``poll``: a socket pair (self-pipe)."""

from __future__ import annotations

import contextlib
import socket


class Waker:
    """A socket pair whose read end a polling thread also watches.

    :meth:`wake` makes it readable, so ``close()`` of a server returns at once
    instead of after the thread's poll timeout. It is never drained: once woken,
    the thread is expected to see its stop flag and leave.
    """

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        """The descriptor to register for reading."""
        return self._r.fileno()

    def wake(self) -> None:
        """Make :meth:`fileno` readable (never blocks; a no-op after :meth:`close`)."""
        with contextlib.suppress(OSError):
            self._w.send(b"\0")

    def close(self) -> None:
        """Close both ends."""
        self._r.close()
        self._w.close()
