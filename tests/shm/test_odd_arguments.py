"""Odd arguments get a clear error instead of a hang; one "is this pid alive";
a clean stop leaves no lock or socket file behind."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading
import time

import psutil
import pytest
from helpers import wait_until

from dpshm.config import StreamSelector, SupervisorConfig
from dpshm.dareplane.eventloop import EventLoop
from dpshm.dareplane.procs import pid_alive, start_time
from dpshm.dareplane.timing import sleep_until
from dpshm.shm import registry
from dpshm.shm.ring import SharedRing
from dpshm.shm.supervisor import Supervisor
from dpshm.shm.view import SharedStreamView


def _bounded(fn, timeout: float = 5.0):
    """Run ``fn`` in a thread; return what it raised (a hang fails the test, not the run)."""
    box: list = []

    def run():
        try:
            fn()
            box.append(None)
        except BaseException as exc:
            box.append(exc)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout)
    assert box, f"{fn} did not return within {timeout} s"
    return box[0]


@pytest.fixture
def view(unique_name):
    ring = SharedRing.create(unique_name, 1, 64, "float32", srate=100.0)
    v = SharedStreamView(unique_name)
    yield v
    v.close()
    ring.close()
    ring.unlink()


@pytest.mark.parametrize(
    ("timeout", "kind", "text"),
    [
        (math.nan, ValueError, "timeout must be a finite number of seconds >= 0, got nan"),
        (math.inf, ValueError, "got inf"),
        (-1.0, ValueError, "got -1.0"),
        ("1", TypeError, "timeout must be a number of seconds, got '1'"),
        (None, TypeError, "got None"),
        (True, TypeError, "got True"),
    ],
)
def test_view_wait_refuses_odd_timeouts(view, timeout, kind, text):
    exc = _bounded(lambda: view.wait(timeout))
    assert isinstance(exc, kind) and text in str(exc), exc
    exc = _bounded(lambda: view.next_window(n_samples=1, timeout=timeout))
    assert isinstance(exc, kind)


def test_view_wait_accepts_numbers(view):
    assert view.wait(0) is False and view.wait(0.01) is False and view.wait(1e-3) is False


def test_eventloop_and_sleep_refuse_odd_arguments():
    loop = EventLoop(0.01)
    for bad, kind in ((math.nan, ValueError), (-1, ValueError), ("x", TypeError)):
        assert isinstance(_bounded(lambda b=bad: loop.stop(b)), kind)
    assert isinstance(_bounded(lambda: sleep_until(math.nan)), ValueError)
    assert isinstance(_bounded(lambda: sleep_until("soon")), TypeError)
    assert isinstance(_bounded(lambda: EventLoop(math.inf)), ValueError)


def test_pid_alive_is_the_one_answer():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # exited but not reaped: a zombie is dead (os.kill(pid, 0) would say alive)
        wait_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 10)
        assert not pid_alive(child.pid)
    finally:
        child.wait(10)
    me = os.getpid()
    started = start_time(me)
    assert pid_alive(me) and pid_alive(me, started) and pid_alive(psutil.Process(me))
    assert not pid_alive(me, started - 100.0)  # same pid, another process: a reused pid
    assert not pid_alive(0) and not pid_alive(-5) and not pid_alive(True)
    assert start_time(child.pid) is None and not pid_alive(child.pid, started)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: CLOCK_BOOTTIME")
def test_a_process_start_is_counted_from_boot_not_from_the_wall_clock(unique_name):
    """The start recorded to recognise a pid is the kernel's tick count since boot.

    psutil's create time adds /proc/stat's boot time, which the kernel derives
    from the wall clock: it moved by a second under load (and moves by any NTP
    step) while the supervisor ran, and consumers declared a live supervisor
    dead. A value counted from boot cannot move, whatever the clock does.
    """
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        after = time.clock_gettime(time.CLOCK_BOOTTIME)
        started = start_time(child.pid)
        assert before - 0.05 <= started <= after + 0.05  # kernel ticks: 10 ms steps
        assert pid_alive(child.pid, started)
    finally:
        child.kill()
        child.wait(10)
    # the registry records the supervisor's start the same way
    sup = Supervisor(SupervisorConfig(namespace=unique_name, streams=(StreamSelector(name="x"),)))
    with sup:
        reg = registry.read_registry(unique_name)
        assert reg.pid == os.getpid() and reg.pid_started == start_time(os.getpid())
        assert reg.alive()


def test_clean_stop_leaves_no_lock_or_socket_file(unique_name):
    sup = Supervisor(SupervisorConfig(namespace=unique_name, streams=(StreamSelector(name="x"),)))
    with sup:
        nsdir = registry.namespace_dir(unique_name)
        names = set(os.listdir(nsdir))
        assert {"supervisor.lock", "heads.ipc", "logs.ipc", "registry.json"} <= names
    assert not os.path.lexists(nsdir)  # nor the namespace directory, once empty


def test_a_lock_on_a_removed_lock_file_is_not_trusted(unique_name):
    import fcntl

    from dpshm.errors import SupervisorRunningError

    a = registry.SupervisorLock(unique_name)
    fd = os.open(a.path, os.O_RDWR)  # another starter opened it just before `a` let go
    try:
        a.close()  # removes the file, then releases the lock
        assert not a.path.exists()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locking the removed file succeeds
        assert not registry._same_file(fd, a.path)  # ... and is recognised as stale
        with registry.SupervisorLock(unique_name) as b:  # the live lock is the new file
            assert registry._same_file(b._fd, b.path)
            with pytest.raises(SupervisorRunningError):
                registry.SupervisorLock(unique_name)
    finally:
        os.close(fd)
    os.rmdir(registry.namespace_dir(unique_name))


@pytest.mark.parametrize(
    ("kwargs", "kind", "text"),
    [
        ({"seconds": math.nan}, ValueError, "seconds must be a finite number of seconds >= 0"),
        ({"seconds": math.inf}, ValueError, "got inf"),
        ({"seconds": -0.5}, ValueError, "got -0.5"),
        ({"n_samples": math.nan}, TypeError, "n_samples must be a number of samples, got nan"),
        ({"n_samples": "3"}, TypeError, "got '3'"),
        ({"n_samples": True}, TypeError, "got True"),
    ],
)
def test_windows_refuse_odd_lengths(view, kwargs, kind, text):
    with pytest.raises(kind, match=re.escape(text)):
        view.get_window(**kwargs)
    with pytest.raises(kind, match=re.escape(text)):
        view.next_window(timeout=0, **kwargs)
    assert view.get_window(n_samples=3.0)[0].shape == (0, 1)  # an integral float is fine


@pytest.mark.parametrize("thread_name", ["dpshm-resolver", "dpshm-status"])
@pytest.mark.parametrize("launched", [False, True])
def test_ctrl_c_inside_a_thread_start_leaves_nothing(unique_name, monkeypatch, thread_name,
                                                      launched):  # fmt: skip
    """A Ctrl-C that lands inside ``Thread.start()`` of one of the supervisor's
    threads: before the thread is launched, or while ``start()`` waits for it to
    report (seen in CI as "cannot join thread before it is started" from
    ``dpshm demo``). ``start()`` must re-raise the KeyboardInterrupt itself and
    leave no registry, lock or ring behind."""
    real_start = threading.Thread.start

    class SlowToReport(threading.Event):
        """The thread reports late; the Ctrl-C lands while ``start()`` waits for it."""

        def set(self):
            time.sleep(0.3)
            super().set()

        def wait(self, timeout=None):
            raise KeyboardInterrupt

    def interrupted_start(self):
        if self.name != thread_name:
            return real_start(self)
        if not launched:
            raise KeyboardInterrupt
        self._started = SlowToReport()
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    sup = Supervisor(SupervisorConfig(namespace=unique_name, streams=(StreamSelector(name="x"),)))
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sup.start()
    monkeypatch.undo()
    assert time.monotonic() - t0 < 10
    assert registry.read_registry_raw(unique_name) is None
    assert not os.path.lexists(registry.namespace_dir(unique_name, create=False))  # no file left
    for t in threading.enumerate():  # a launched thread saw the stop and ended
        if t.name == thread_name:
            t.join(5)
            assert not t.is_alive()
