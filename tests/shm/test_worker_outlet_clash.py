"""The supervisor never shares a worker's outlet under a name another stream
holds, so consumers never meet AmbiguousStreamError because of a worker, even
a worker that publishes under a name its declaration did not check."""

from __future__ import annotations

import logging

import pytest
from helpers import wait_until

from dpshm.config import StreamSelector, SupervisorConfig, worker_source_id
from dpshm.shm import registry
from dpshm.shm.supervisor import Supervisor
from dpshm.shm.view import SharedStreamView

pytestmark = pytest.mark.lsl


def test_worker_outlet_with_a_taken_name_is_not_shared(outlets, unique_name, caplog):
    caplog.set_level(logging.ERROR, logger="dpshm.shm.supervisor")
    name = f"{unique_name}_x"
    rogue_sid = worker_source_id(unique_name, "rogue")
    # both appear in the same resolution round: the amplifier's must win
    amp = outlets.make(name=name, source_id=f"{unique_name}-amp")
    rogue = outlets.make(name=name, source_id=rogue_sid)
    cfg = SupervisorConfig(
        namespace=unique_name, resolve_interval_s=0.2, streams=(StreamSelector(name=name),)
    )
    with Supervisor(cfg):
        wait_until(lambda: any("already has that name" in r.getMessage() for r in caplog.records),
                   15)  # fmt: skip

        def shared():
            return [e.source_id for e in registry.read_registry(unique_name).streams.values()]

        assert wait_until(shared, 10) == [f"{unique_name}-amp"]
        with SharedStreamView(name, namespace=unique_name) as v:  # no AmbiguousStreamError
            amp.push_chunk([[1.0, 2.0]] * 5)
            rogue.push_chunk([[9.0, 9.0]] * 5)
            assert v.wait(5.0)
            data, _ts, _lost = v.read_new()
            assert (data == [1.0, 2.0]).all()
