"""Joining a thread whose ``start()`` a Ctrl-C may have interrupted."""

from __future__ import annotations

import threading
import time

#: How long a launched thread may take to report that it started.
START_GRACE_S = 0.5


def join_thread(thread: threading.Thread | None, timeout: float) -> None:
    """Join ``thread`` for up to ``timeout`` seconds, whatever state ``start()`` left it in.

    A ``KeyboardInterrupt`` can land inside :meth:`threading.Thread.start`:
    before the thread is launched, or while ``start()`` waits for it to report
    that it runs. ``join()`` then raises ``RuntimeError("cannot join thread
    before it is started")``, which turned a Ctrl-C during start-up into a
    traceback. Here a thread that has not reported is given
    :data:`START_GRACE_S` to do so (it was launched: join it), otherwise it was
    never launched and there is nothing to wait for.
    """
    if thread is None:
        return
    deadline = time.monotonic() + timeout
    grace = time.monotonic() + min(timeout, START_GRACE_S)
    while True:
        try:
            thread.join(max(0.0, deadline - time.monotonic()))
            return
        except RuntimeError:  # not (yet) started
            if time.monotonic() >= grace:
                return
            time.sleep(0.005)
