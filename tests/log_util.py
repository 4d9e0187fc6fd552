"""Test helper: a dpshm log receiver served in a thread (import as ``from log_util import ...``)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dpshm.dareplane.logserver import LogRecordSocketReceiver


@contextlib.contextmanager
def serving_receiver(
    logfile: Path | None, **kwargs: Any
) -> Iterator[tuple[LogRecordSocketReceiver, list[logging.LogRecord]]]:
    """Run a receiver on 127.0.0.1 (free port) in a thread; yield it and its records.

    Stopped and joined (bounded) on exit, also when the test fails.
    """
    records: list[logging.LogRecord] = []
    kwargs.setdefault("console", False)
    rcv = LogRecordSocketReceiver(
        "127.0.0.1", 0, logfile=logfile, record_callback=records.append, **kwargs
    )
    th = threading.Thread(target=rcv.serve_until_stopped, daemon=True)
    th.start()
    try:
        yield rcv, records
    finally:
        rcv.close()
        th.join(5)
        assert not th.is_alive(), "log receiver thread did not end"
