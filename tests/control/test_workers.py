"""WorkerManager: thread and process workers, failures, restarts, logging, stopping."""

from __future__ import annotations

import logging
import threading
import time

import psutil
import pytest
from helpers import TESTS, wait_until
from worker_targets import collect_logs, make_spec

from dpshm.control.workers import WorkerManager
from dpshm.errors import WorkerError


@pytest.fixture
def logs():
    with collect_logs() as h:
        yield h


def manager(*specs, **kw):
    kw.setdefault("search_path", str(TESTS))
    kw.setdefault("grace_s", 1.0)
    kw.setdefault("stop_timeout_s", 1.0)
    return WorkerManager({s.name: s for s in specs}, **kw)


def _worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("dpshm-worker-")]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_start_stop_logs_reach_parent(mode, logs):
    params = {"b": {"type": "int", "min": 0, "max": 9}}
    spec = make_spec("idle", "worker_targets:wait_for_stop", mode, kwargs={"a": 1}, params=params)
    with manager(spec) as m:
        wid = m.start("idle", kwargs={"b": 2})
        assert wid == "idle-1"
        wait_until(lambda: any("up in pid" in s for s in logs.messages(f"dpshm.worker.{wid}")))
        rec = next(r for r in logs.records if "up in pid" in r.getMessage())
        assert "'a': 1" in rec.getMessage() and "'b': 2" in rec.getMessage()
        st = m.get(wid)
        assert st["state"] == "running" and st["mode"] == mode
        if mode == "process":
            assert st["pid"] != psutil.Process().pid and psutil.pid_exists(st["pid"])
        final = m.stop(wid)
        assert final["state"] == "stopped"
        # the worker saw its stop event and said so (clean stop, not a kill)
        wait_until(lambda: any("stopping" in s for s in logs.messages(f"dpshm.worker.{wid}")))
        if mode == "process":
            assert final["exitcode"] == 0
            assert not psutil.pid_exists(st["pid"]) or psutil.Process(st["pid"]).status() == (
                psutil.STATUS_ZOMBIE
            )
    assert not _worker_threads()


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_raising_worker_reported_with_traceback_others_carry_on(mode, logs):
    specs = (
        make_spec("bad", "worker_targets:fail", mode),
        make_spec("good", "worker_targets:wait_for_stop", mode),
    )
    with manager(*specs) as m:
        good = m.start("good")
        wait_until(lambda: m.get(good)["state"] == "running", timeout=20)
        bad = m.start("bad")
        st = m.wait(bad, timeout=20)
        assert st["state"] == "failed"
        assert "ValueError: boom from bad-2" in st["error"]
        assert "Traceback" in st["error"]
        errors = [r for r in logs.records if r.levelno >= logging.ERROR]
        assert any("boom from bad-2" in r.getMessage() for r in errors)
        assert m.get(good)["state"] == "running"
        if mode == "process":
            assert st["exitcode"] == 1
        m.stop(good)


def test_process_exit_code_and_finish(logs):
    specs = (
        make_spec("exit3", "worker_targets:exit_with", "process", kwargs={"code": 3}),
        make_spec("fin", "worker_targets:finish", "process"),
    )
    with manager(*specs) as m:
        a, b = m.start("exit3"), m.start("fin")
        st = m.wait(a, timeout=20)
        assert st["state"] == "failed" and st["exitcode"] == 3
        assert "exited with code 3" in st["error"]
        st = m.wait(b, timeout=20)
        assert st["state"] == "finished" and st["exitcode"] == 0


def test_killed_process_noticed_within_a_second(logs):
    with manager(make_spec("idle", "worker_targets:wait_for_stop", "process")) as m:
        wid = m.start("idle")
        wait_until(lambda: logs.messages(f"dpshm.worker.{wid}"), timeout=20)
        pid = m.get(wid)["pid"]
        t_kill = time.time()
        psutil.Process(pid).kill()
        st = m.wait(wid, timeout=5)
        assert st["state"] == "failed"
        assert "SIGKILL" in st["error"]
        assert st["ended_at"] - t_kill < 1.0


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_restart_on_failure_with_backoff_at_most_n(mode, logs):
    spec = make_spec(
        "flaky", "worker_targets:fail", mode, restart="on-failure", max_restarts=2, backoff_s=0.05
    )
    with manager(spec) as m:
        wid = m.start("flaky")
        st = m.wait(wid, timeout=30)
        assert st["state"] == "failed"
        assert st["restarts"] == 2 and st["max_restarts"] == 2
        assert st["restart"] == "on-failure"
        warnings = [s for s in logs.messages(f"dpshm.worker.{wid}") if "restart" in s]
        assert any("restart 1 of 2" in s for s in warnings)
        assert any("restart 2 of 2" in s for s in warnings)


def test_restart_visible_while_backing_off():
    spec = make_spec(
        "flaky", "worker_targets:fail", "thread", restart="on-failure", max_restarts=1, backoff_s=30
    )
    with manager(spec) as m:
        wid = m.start("flaky")
        st = wait_until(lambda: (s := m.get(wid))["state"] == "restarting" and s)
        assert 0 < st["next_restart_in"] <= 30
        assert "boom" in st["error"]
        # stopping a worker that waits for its restart cancels the restart
        assert m.stop(wid)["state"] == "stopped"
        assert m.get(wid)["next_restart_in"] is None


def test_process_ignoring_stop_is_killed_with_its_tree(logs):
    spec = make_spec("stubborn", "worker_targets:spawn_and_ignore_stop", "process")
    with manager(spec, grace_s=0.3) as m:
        wid = m.start("stubborn")
        msg = wait_until(lambda: logs.messages(f"dpshm.worker.{wid}"), timeout=20)[0]
        grandchild = psutil.Process(int(msg.split()[-1]))
        st = m.stop(wid)
        assert st["state"] == "stopped"
        assert st["exitcode"] == -15  # SIGTERM after the grace period
        grandchild.wait(5)  # raises TimeoutExpired if it survived
        assert not psutil.pid_exists(st["pid"])


def test_stuck_thread_reported_not_leaked(logs):
    spec = make_spec("stubborn", "worker_targets:ignore_stop", "thread", kwargs={"sleep_s": 0.6})
    with manager(spec, stop_timeout_s=0.2) as m:
        wid = m.start("stubborn")
        st = m.stop(wid)
        assert st["state"] == "stuck"
        assert "did not return within 0.2 s" in st["error"]
        assert any("did not return" in s for s in logs.messages())
        # once it returns after all, it is recorded as stopped
        assert m.wait(wid, timeout=5)["state"] == "stopped"
    assert not _worker_threads()


def test_refusals():
    spec = make_spec("idle", "worker_targets:wait_for_stop", "thread")
    with manager(spec, max_workers=1) as m:
        with pytest.raises(
            WorkerError, match=r"unknown worker 'nope'.*Declared workers: \['idle'\]"
        ):
            m.start("nope")
        with pytest.raises(WorkerError, match="looks like a target string"):
            m.start("os:system")
        with pytest.raises(WorkerError, match="unknown worker id 'idle-9'"):
            m.stop("idle-9")
        wid = m.start("idle")
        with pytest.raises(WorkerError, match="limit is 1"):
            m.start("idle")
        m.stop(wid)
    with pytest.raises(WorkerError, match="mode 'fiber'"):
        WorkerManager({"x": make_spec("x", "a:b", "fiber")})


def test_bad_target_thread_mode_refused_process_mode_reported():
    specs = (
        make_spec("t", "no_such_module_xyz:run", "thread"),
        make_spec("p", "worker_targets:no_such_function", "process"),
    )
    with manager(*specs) as m:
        with pytest.raises(WorkerError, match="cannot import module 'no_such_module_xyz'"):
            m.start("t")
        wid = m.start("p")
        st = m.wait(wid, timeout=20)
        assert st["state"] == "failed"
        assert "has no attribute 'no_such_function'" in st["error"]


def test_stop_all_and_close_leave_nothing():
    specs = (
        make_spec("t", "worker_targets:wait_for_stop", "thread"),
        make_spec("p", "worker_targets:wait_for_stop", "process"),
    )
    m = manager(*specs)
    ids = [m.start("t"), m.start("p"), m.start("t"), m.start("p")]
    pids = [m.get(i)["pid"] for i in ids if i.startswith("p")]
    assert sorted(m.stop_all()) == sorted(ids)
    assert {s["state"] for s in m.status()} == {"stopped"}
    m.close()
    m.close()  # idempotent
    assert not _worker_threads()
    assert not [t for t in threading.enumerate() if t.name == "dpshm-workers-monitor"]
    for pid in pids:
        assert not psutil.pid_exists(pid)
    with pytest.raises(WorkerError, match="closed"):
        m.start("t")
