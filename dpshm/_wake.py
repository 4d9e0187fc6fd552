"""Waking a thread that blocks in ``select``/``poll``: a socket pair (self-pipe)."""

from __future__ import annotations

import contextlib
import socket


class Waker:
    """A socket pair whose read end a polling thread also watches.

    :meth:`wake` (from any thread) makes it readable, so the polling thread
    looks at its queue or stop flag at once instead of after its poll timeout;
    it calls :meth:`drain` when it should block again. Used by every loop of
    dpshm that waits on descriptors (the Dareplane server's I/O thread, the
    worker monitor, the request and doorbell servers).
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

    def drain(self) -> None:
        """Read every pending wake-up (never blocks)."""
        try:
            while self._r.recv(4096):
                pass
        except OSError:  # BlockingIOError: drained (or closed)
            pass

    def close(self) -> None:
        """Close both ends."""
        self._r.close()
        self._w.close()
