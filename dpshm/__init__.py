"""dpshm: share LSL streams between processes through shared memory.

The public API is re-exported here. Names are imported lazily on first use so
that ``import dpshm`` stays cheap and a module that only needs the command
server does not import the shared-memory machinery, pylsl or ZeroMQ.
"""

from __future__ import annotations

import importlib
from typing import Any

from dpshm._version import __version__
from dpshm.errors import DpshmError

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "SharedRing": "dpshm.shm.ring",
    "SharedStreamView": "dpshm.shm.view",
    "publish_stream": "dpshm.shm.publish",
    "StreamPublisher": "dpshm.shm.publish",
    "list_streams": "dpshm.shm.registry",
    "RingBuffer": "dpshm.dareplane.ringbuffer",
    "StreamWatcher": "dpshm.dareplane.watcher",
    "get_streams_names": "dpshm.dareplane.watcher",
    "pylsl_xmlelement_to_dict": "dpshm.dareplane.watcher",
    "FilterBank": "dpshm.dareplane.filterbank",  # needs scipy: pip install 'dpshm[filters]'
    "EventLoop": "dpshm.dareplane.eventloop",
    "sleep_s": "dpshm.dareplane.timing",
    "DefaultServer": "dpshm.dareplane.server",
    "DefaultCallbackServer": "dpshm.dareplane.callback_server",
    "get_logger": "dpshm.dareplane.logs",
    "JsonSocketHandler": "dpshm.dareplane.logs",
    "LogRecordSocketReceiver": "dpshm.dareplane.logserver",
}

__all__ = ["DpshmError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dpshm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
