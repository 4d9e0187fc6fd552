"""A stream the supervisor tells anyone about is already in its registry.

The registry is rewritten by the housekeeping thread. Under load that thread
can lag behind a feed that has just created its ring, while ``LIST_STREAMS``
(the supervisor's status) already shows the stream: a worker started for it
then failed with "no stream ... known streams: none" (seen in CI on a busy
machine). Here the housekeeping thread never hears of a change, the worst case
of that lag.
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import wait_until

from dpshm.config import StreamSelector, SupervisorConfig
from dpshm.shm import registry
from dpshm.shm.supervisor import Supervisor
from dpshm.shm.view import SharedStreamView

pytestmark = pytest.mark.lsl


class _Deaf(threading.Event):
    """The housekeeping thread's wake-up, as if that thread never got the CPU."""

    def wait(self, timeout: float | None = None) -> bool:
        time.sleep(min(timeout or 0.05, 0.05))
        return False


def test_status_never_shows_a_stream_the_registry_lacks(outlets, unique_name):
    name = f"{unique_name}_eeg"
    out = outlets.make(name=name, source_id=f"{unique_name}-amp")
    cfg = SupervisorConfig(
        namespace=unique_name, resolve_interval_s=0.2, streams=(StreamSelector(name=name),)
    )
    sup = Supervisor(cfg)
    sup._registry_dirty = _Deaf()
    with sup:
        assert registry.read_registry(unique_name).streams == {}
        (key,) = wait_until(lambda: list(sup.status()["streams"]), 15)
        # told of it, a consumer finds it at once (no timeout)
        assert list(registry.read_registry(unique_name).streams) == [key]
        with SharedStreamView(name, namespace=unique_name) as v:
            out.push_chunk([[1.0, 2.0]] * 5)
            assert v.wait(5.0)
        # once listed, asking again writes nothing
        stamp = registry.registry_stamp(unique_name)
        for _ in range(3):
            sup.status()
        assert registry.registry_stamp(unique_name) == stamp
    assert registry.read_registry_raw(unique_name) is None  # close removed it
