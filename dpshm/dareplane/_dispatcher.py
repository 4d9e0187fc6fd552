"""The command server's one handler thread, fair between connections.

Handlers and connection hooks run here, one at a time (module code need not
be thread-safe, as with the original single-client server). Each connection
has its own queue; the thread takes one item from each connection with work
in turn, so a client that sends thousands of commands at once delays another
client's command by at most one of its own.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from dpshm._logging import library_logger
from dpshm.dareplane._conn import Connection

log = library_logger(__name__)

#: A connection with more commands queued than this is not read from until it drains.
MAX_QUEUED = 64
#: ... nor one with more bytes of commands queued than this.
MAX_QUEUED_BYTES = 1 << 20


def _size(item: Any) -> int:
    return len(item) if isinstance(item, bytes) else 0


class Dispatcher:
    """Run ``run(conn, item)`` for queued items, round-robin over connections.

    Parameters
    ----------
    run : Callable[[Connection, Any], None]
        Executes one item (exceptions are the caller's to handle; one that
        escapes is logged and the thread goes on).
    drained : Callable[[Connection], None]
        Called when a paused connection's queue fell below half of
        :data:`MAX_QUEUED` commands and :data:`MAX_QUEUED_BYTES` (to resume
        reading it).
    name : str
        Thread name.
    """

    def __init__(
        self,
        run: Callable[[Connection, Any], None],
        drained: Callable[[Connection], None],
        name: str,
    ) -> None:
        self._run = run
        self._drained = drained
        self._cv = threading.Condition()
        self._ready: deque[Connection] = deque()
        self._stopping = False
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, conn: Connection, *items: Any) -> int:
        """Queue ``items`` for ``conn``; return whether it now holds too much (pause reading)."""
        with self._cv:
            conn.queue.extend(items)
            conn.queued_bytes += sum(map(_size, items))
            if not conn.scheduled:
                conn.scheduled = True
                self._ready.append(conn)
                self._cv.notify()
            return len(conn.queue) >= MAX_QUEUED or conn.queued_bytes >= MAX_QUEUED_BYTES

    def discard(self, conn: Connection, keep: Callable[[Any], bool]) -> None:
        """Drop ``conn``'s queued items except those ``keep`` accepts."""
        with self._cv:
            kept = [item for item in conn.queue if keep(item)]
            conn.queue.clear()
            conn.queue.extend(kept)
            conn.queued_bytes = sum(map(_size, kept))

    def stop(self, timeout: float) -> bool:
        """Run what is queued, then end the thread; ``False`` if still busy after ``timeout``."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self.thread.ident is None or self.thread is threading.current_thread():
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._ready and not self._stopping:
                    self._cv.wait()
                if not self._ready:
                    return
                conn = self._ready.popleft()
                item = conn.queue.popleft()
                conn.queued_bytes -= _size(item)
            try:
                self._run(conn, item)
            except Exception:
                log.exception("command server: unexpected error running %r", item)
            with self._cv:
                if conn.queue:
                    self._ready.append(conn)
                else:
                    conn.scheduled = False
                resume = (
                    conn.paused
                    and len(conn.queue) <= MAX_QUEUED // 2
                    and conn.queued_bytes <= MAX_QUEUED_BYTES // 2
                )
            if resume:
                self._drained(conn)
