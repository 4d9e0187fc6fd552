"""``DefaultCallbackServer``: the command server that also pushes callbacks.

A module puts payloads such as ``"control_room|PCOMM|payload"`` on
``callback_stack``; one sender thread, woken by the append, writes them in order
to the callback target (the client whose command last started work, normally
the control room, which forwards them; see ``DefaultServer.current_conn``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from dpshm._threads import join_thread
from dpshm.dareplane.server import _POLL_S, DefaultServer

__all__ = ["DefaultCallbackServer"]


class _NotifyingDeque(deque):
    """A deque whose ``append``/``extend`` wake the callback sender."""

    def __init__(self, iterable: Iterable[Any] = (), *, event: threading.Event) -> None:
        super().__init__(iterable)
        self.event = event

    def append(self, x: Any) -> None:
        super().append(x)
        self.event.set()

    def extend(self, xs: Iterable[Any]) -> None:
        super().extend(xs)
        self.event.set()


class DefaultCallbackServer(DefaultServer):
    """:class:`DefaultServer` that also pushes callback payloads to its clients.

    Payloads appended to :attr:`callback_stack` (``str`` or ``bytes``, e.g.
    ``"control_room|PCOMM|payload"``) are sent, in order, by one sender thread,
    to the callback target: the client whose command last started work
    (before any, the longest-connected client), never to a client that only
    sent built-ins such as ``UP`` or ``GET_PCOMMS``. Payloads for a target
    that has disconnected, or queued while nobody is connected, are
    discarded (logged).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cb_event = threading.Event()
        self.callback_stack: deque = _NotifyingDeque(event=self._cb_event)
        self._cb_thread: threading.Thread | None = None
        self._cb_stop = threading.Event()

    def _on_listen_start(self) -> None:
        self._cb_stop.clear()
        self._cb_thread = threading.Thread(
            target=self._send_callbacks, name=f"dpshm-callbacks-{self.name}", daemon=True
        )
        self._cb_thread.start()

    def _on_listen_stop(self) -> None:
        self._cb_stop.set()
        self._cb_event.set()
        if self._cb_thread is not None:
            join_thread(self._cb_thread, 2.0)
            self._cb_thread = None

    def _send_callbacks(self) -> None:
        while not self._cb_stop.is_set():
            self._cb_event.wait(_POLL_S)
            self._cb_event.clear()
            while True:
                try:
                    payload = self.callback_stack.popleft()
                except IndexError:
                    break
                data = payload.encode() if isinstance(payload, str) else bytes(payload)
                target = self._callback_target()
                if target is None:
                    self.logger.debug("no client connected; callback %r discarded", data[:80])
                else:
                    target.handle.sendall(data)  # logs (once) if the target has gone
