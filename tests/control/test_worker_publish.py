"""Workers publish streams (``ctx.publish_stream``), closed when the worker ends."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import TESTS, wait_until
from supervisor_util import Sup
from worker_targets import collect_logs, make_spec

from dpshm.control.workers import WorkerManager
from dpshm.shm.view import SharedStreamView


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_worker_publishes_and_its_stream_ends_with_it(mode, procs):
    ns, started = procs
    sup = Sup(ns, f"{ns}-no-lsl")
    started.append(sup)
    sup.ready()
    name = f"{ns}-{mode}-out"
    spec = make_spec("pub", "worker_targets:publish_ramp", mode, kwargs={"name": name, "n": 50})
    with (
        collect_logs() as logs,
        WorkerManager(
            {"pub": spec}, search_path=str(TESTS), namespace=ns, grace_s=1.0, stop_timeout_s=2.0
        ) as m,
    ):
        wid = m.start("pub")
        wait_until(lambda: any("published" in s for s in logs.messages(f"dpshm.worker.{wid}")), 20)
        entry = sup.entry(name)
        expected_pid = os.getpid() if mode == "thread" else m.get(wid)["pid"]
        assert entry.producer_pid == expected_pid and entry.type == "Ramp"
        with SharedStreamView(name) as view:
            assert view.head == 50
            data, ts = view.get_window(n_samples=50, copy=True)
            np.testing.assert_array_equal(data[:, 1], -np.arange(50, dtype=np.float32))
            np.testing.assert_array_equal(ts, np.arange(50.0))
            assert m.stop(wid)["state"] == "stopped"
            # the worker ended: its publisher was closed (stale, ring unlinked by its owner)
            sup.entry(name, lambda e: e.stale)
            assert view.stale
            wait_until(lambda: not os.path.exists(f"/dev/shm/dpshm_{entry.ring}"), 5)
