"""The doorbell wake path with real sockets, real shared memory and real processes.

The test process plays the supervisor's part (a ring, a registry naming it and
a :class:`DoorbellServer`), so these tests need no LSL; the supervisor tests
cover the same path under ``dpshm up``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from helpers import ROOT, wait_until

from dpshm.errors import ConfigError
from dpshm.shm import doorbell, registry
from dpshm.shm.doorbell import Doorbell, DoorbellServer
from dpshm.shm.follow import wake_path
from dpshm.shm.ring import SharedRing
from dpshm.shm.view import SharedStreamView

pytestmark = pytest.mark.skipif(not doorbell.AVAILABLE, reason="doorbells need Linux")


KEY = "eeg.0123abcd"


class FakeSupervisor:
    """Ring + registry + doorbell server in this process (one generation)."""

    def __init__(self, ns: str, gen: int = 1):
        self.ns = ns
        self.gen = gen
        self.ring = SharedRing.create(
            f"{ns}.{KEY}.g{gen}", 2, 1000, "float32", srate=100.0, generation=gen
        )
        self.closed = False
        self.bell = DoorbellServer(doorbell.control_address(ns, f"t{gen}"))
        self.n = 0
        me = os.getpid()
        registry.write_registry(
            ns,
            {
                "version": registry.REGISTRY_VERSION,
                "namespace": ns,
                "pid": me,
                "pid_create_time": registry._pid_create_time(me),
                "endpoints": {"doorbell": self.bell.address},
                "streams": {
                    KEY: {"name": "eeg", "type": "EEG", "source_id": "amp", "ring": self.ring.name,
                          "generation": gen}
                },
            },
        )  # fmt: skip

    def write(self, k: int, ring_bell: bool = True) -> None:
        idx = np.arange(self.n, self.n + k, dtype=np.float32)
        self.ring.write(np.stack([idx, -idx], axis=1), idx.astype(np.float64))
        self.n += k
        if ring_bell:
            self.bell.ring(KEY, self.gen)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.bell.close()
        self.ring.unlink()
        self.ring.close()


@pytest.fixture
def fake(unique_name, monkeypatch):
    monkeypatch.setenv("DPSHM_NAMESPACE", unique_name)
    monkeypatch.delenv("DPSHM_WAKE", raising=False)
    made: list[FakeSupervisor] = []

    def make(gen: int = 1) -> FakeSupervisor:
        made.append(FakeSupervisor(unique_name, gen))
        return made[-1]

    yield make
    for f in made:
        f.close()
    shutil.rmtree(registry.namespace_dir(unique_name, create=False), ignore_errors=True)


def _reap(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs, wait for it, close its stdout."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def _expected(a: int, b: int) -> np.ndarray:
    idx = np.arange(a, b, dtype=np.float32)
    return np.stack([idx, -idx], axis=1)


def test_bells_drained_in_one_wake_and_unsubscribe(unique_name):
    with DoorbellServer(doorbell.control_address(unique_name, "x")) as srv:
        bell = Doorbell(srv.address, KEY)
        try:
            wait_until(lambda: srv.subscribers(KEY) == 1, 5)
            bell.subscribe()  # a duplicate subscription is ignored
            for timeout in (0.05, 0.2, 0.05):  # the kernel timeout follows each call's
                t0 = time.monotonic()
                assert bell.wait(timeout) is None  # nothing rung: bounded
                assert timeout - 0.01 <= time.monotonic() - t0 < timeout + 1.0
            assert bell.wait(0) is None  # does not block
            for gen in (3, 3, 4):
                assert srv.ring(KEY, gen) == 1
            assert srv.ring("other.stream", 1) == 0
            assert bell.wait(5.0) == 3  # one bell per wake, oldest first
            assert bell.drain() == 4  # the rest at once: the newest generation
            assert bell.drain() is None
            for _ in range(1000):  # its queue fills: ignored, the subscriber is kept
                srv.ring(KEY, 5)
            assert srv.subscribers(KEY) == 1 and srv.dropped == 0
            assert bell.wait(1.0) == 5 and bell.drain() == 5 and bell.drain() is None
        finally:
            bell.close()
            bell.close()  # idempotent
        wait_until(lambda: srv.subscribers(KEY) == 0, 5)  # unsubscribed on close
    srv.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        bell.wait(0.01)


def test_timeval_layout_the_kernel_accepts_is_used(unique_name, monkeypatch):
    import struct

    # a 6-byte "timeval" is refused by the kernel (EINVAL): the next layout is taken
    monkeypatch.setattr(doorbell, "_TIMEVALS", (struct.Struct("=HI"), *doorbell._TIMEVALS))
    with DoorbellServer(doorbell.control_address(unique_name, "tv")) as srv:
        bell = Doorbell(srv.address, KEY)
        try:
            assert bell._timevals == doorbell._TIMEVALS[1:2]
            t0 = time.monotonic()
            assert bell.wait(0.1) is None
            assert 0.09 <= time.monotonic() - t0 < 2.0
        finally:
            bell.close()
        monkeypatch.setattr(doorbell, "_TIMEVALS", (struct.Struct("=HI"),))
        with pytest.raises(OSError, match="SO_RCVTIMEO"):  # the view then wakes on ZeroMQ
            Doorbell(srv.address, KEY)


def test_a_stuck_supervisor_never_blocks_a_consumer(unique_name):
    import socket

    addr = doorbell.control_address(unique_name, "stuck")
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stuck.bind(b"\0" + addr.encode())  # bound, never read: its queue fills up
    try:
        bell = Doorbell(addr, KEY)
        t0 = time.monotonic()
        results = [bell.subscribe() for _ in range(200)]
        assert not results[-1] and not bell.subscribed  # refused at once, retried later
        bell.close()  # the unsubscription cannot be queued either: close returns anyway
        assert time.monotonic() - t0 < 5.0
    finally:
        stuck.close()


WAITER = """
import sys
from dpshm.shm.doorbell import Doorbell
bell = Doorbell(sys.argv[1], "eeg.0123abcd")
try:
    print("ready", flush=True)
    bell.wait(60.0)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_interrupts_a_waiting_consumer(unique_name, tmp_path):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    with DoorbellServer(doorbell.control_address(unique_name, "int")) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-c", WAITER, srv.address],
            env=dict(os.environ, PYTHONPATH=path), stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            ps = psutil.Process(proc.pid)  # asleep after "ready": in its recv
            wait_until(lambda: ps.status() == psutil.STATUS_SLEEPING, 10)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            assert proc.stdout.readline().strip() == "interrupted"
            assert proc.wait(10) == 0 and time.monotonic() - t0 < 5.0
        finally:
            _reap(proc)


def test_wake_path_choice(monkeypatch):
    assert wake_path({}) == "doorbell"
    assert wake_path({"DPSHM_WAKE": "zmq"}) == "zmq"
    with pytest.raises(ConfigError, match=r"DPSHM_WAKE.*'pipe'.*doorbell"):
        wake_path({"DPSHM_WAKE": "pipe"})


CONSUMER = r"""
import sys
import numpy as np
from dpshm.shm.view import SharedStreamView
n, out = int(sys.argv[1]), sys.argv[2]
with SharedStreamView("eeg") as v:
    print("ready", type(v._link._sub).__name__, flush=True)
    got = []
    while sum(len(t) for t in got) < n:
        if v.update(wait=5.0):
            got.append(v.samples)
    np.save(out, np.concatenate(got))
    print("done", flush=True)
    v.wait(60)  # stays subscribed until killed
"""


def test_delivery_to_a_process_and_sigkilled_consumer_dropped(fake, unique_name, tmp_path):
    sup = fake()
    out = tmp_path / "got.npy"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, "500", str(out)],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["ready", "Doorbell"]
        wait_until(lambda: sup.bell.subscribers(KEY) == 1, 10)
        for _ in range(50):
            sup.write(10)
        assert proc.stdout.readline().strip() == "done"
        np.testing.assert_array_equal(np.load(out), _expected(0, 500))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # the dead consumer's address vanished: the next bell drops it, nothing else notices
        wait_until(lambda: (sup.write(1), sup.bell.subscribers(KEY) == 0)[1], 5)
        assert sup.bell.dropped == 1
    finally:
        _reap(proc)


def test_lost_bell_and_lost_subscription_cost_latency_not_data(fake):
    sup = fake()
    with SharedStreamView("eeg") as v:
        link = v._link
        assert isinstance(link._sub, Doorbell)
        wait_until(lambda: sup.bell.subscribers(KEY) == 1, 5)
        sup.write(7, ring_bell=False)  # the bell is lost
        assert v.wait(5.0)
        d, _, lost = v.read_new()
        np.testing.assert_array_equal(d, _expected(0, 7))
        assert lost == 0
        sup.bell._subs.clear()  # the supervisor forgot the subscription
        sup.write(5)
        assert v.update(wait=5.0) == 5
        np.testing.assert_array_equal(v.samples, _expected(7, 12))
        assert not v.wait(0.6)  # quiet: the subscription is re-sent meanwhile
        wait_until(lambda: sup.bell.subscribers(KEY) == 1, 5)


def test_bells_queued_while_busy_do_not_spin_the_next_wait(fake):
    sup = fake()
    with SharedStreamView("eeg") as v:
        wait_until(lambda: sup.bell.subscribers(KEY) == 1, 5)
        for _ in range(30):  # rung while the consumer does not sleep: bells queue up
            sup.write(2)
        d, _ = v.next_window(8, timeout=5.0)
        np.testing.assert_array_equal(d, _expected(52, 60))
        assert (v.n_new, v.skipped_samples) == (60, 52)
        t0 = time.monotonic()
        assert v.next_window(8, timeout=0.3) is None  # stale bells drained, then it sleeps
        assert 0.29 <= time.monotonic() - t0 < 3.0
        assert v._link._sub.drain() is None
        sup.write(3)
        d, _ = v.next_window(8, timeout=5.0)
        np.testing.assert_array_equal(d, _expected(55, 63))


def test_samples_the_old_ring_never_delivered_are_counted(fake):
    first = fake(gen=1)
    with SharedStreamView("eeg") as v, SharedStreamView("eeg") as w:
        first.write(4)
        assert v.update(wait=5.0) == 4
        assert w.next_window(2, timeout=5.0) is not None and w.n_new == 4
        first.write(3)  # never read: the stream moves before the views look again
        first.close()
        second = fake(gen=2)
        second.write(6)
        v._link.invalidate()  # the next call looks at the registry first (as after 0.25 s)
        w._link.invalidate()
        d, t, lost = v.read_new()  # the 3 come with the first rows of the new ring
        assert (len(t), lost, v.lost_samples, v.generation, v.reattached) == (6, 3, 3, 2, 1)
        np.testing.assert_array_equal(d, _expected(0, 6))
        d, _ = w.next_window(2, timeout=5.0)
        np.testing.assert_array_equal(d, _expected(4, 6))
        assert (w.n_new, w.skipped_samples, w.lost_samples) == (4 + 6, 2 + 4, 3)


def test_supervisor_restart_resubscribes(fake):
    first = fake(gen=1)
    with SharedStreamView("eeg") as v:
        wait_until(lambda: first.bell.subscribers(KEY) == 1, 5)
        first.write(4)
        assert v.update(wait=5.0) == 4
        first.close()
        second = fake(gen=2)  # new ring, new doorbell address, registry rewritten
        second.write(6)
        assert v.update(wait=5.0) == 6  # re-attached; the new ring read from its start
        np.testing.assert_array_equal(v.samples, _expected(0, 6))
        assert v.generation == 2
        wait_until(lambda: second.bell.subscribers(KEY) == 1, 5)
        assert v._link._sub.address == second.bell.address
        second.write(3)
        assert v.update(wait=5.0) == 3
