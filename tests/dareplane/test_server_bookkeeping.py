"""Threads, process trees and callbacks of the command server."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import psutil
import pytest
from helpers import wait_until
from server_client import RunningServer

from dpshm.dareplane.callback_server import DefaultCallbackServer
from dpshm.dareplane.procs import stop_process_tree
from dpshm.dareplane.server import DefaultServer

# a parent that starts a child; the child optionally ignores SIGTERM
TREE = r"""
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
''', sys.argv[1]], stdout=subprocess.PIPE)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(60)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _start_tree(mode: str) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, "-c", TREE, mode], stdout=subprocess.PIPE)
    child = int(p.stdout.readline())
    p.stdout.close()
    return p, child


@pytest.mark.parametrize("mode", ["polite", "stubborn"])
def test_stop_kills_thread_and_process_tree(mode: str) -> None:
    procs: list[subprocess.Popen] = []
    children: list[int] = []
    loops = threading.Event()

    def start_proc() -> subprocess.Popen:
        p, child = _start_tree(mode)
        procs.append(p)
        children.append(child)
        return p

    def start_thread() -> tuple[threading.Thread, threading.Event]:
        ev = threading.Event()
        th = threading.Thread(target=lambda: (loops.set(), ev.wait(30)), daemon=True)
        th.start()
        return th, ev

    srv = DefaultServer(
        0, pcommand_map={"PROC": start_proc, "THREAD": start_thread}, process_grace_s=0.3
    )
    rs = RunningServer(srv)
    try:
        c = rs.client()
        c.send(b"PROC;THREAD;THREAD;")
        assert c.ask(b"UP;", 1) == b"1"
        assert len(srv.processes) == 1 and len(srv.threads) == 2
        threads = [th for th, _ in srv.threads.values()]
        assert psutil.pid_exists(children[0]) and loops.is_set()
        assert c.ask(b"STOP;UP;", 1) == b"1"
        assert srv.threads == {} and srv.processes == {}
        assert not any(th.is_alive() for th in threads)
        assert procs[0].poll() is not None
        wait_until(lambda: _gone(children[0]), 5)
    finally:
        rs.stop()
        for p in procs:
            stop_process_tree(p, grace_s=0.1)


def test_stop_does_not_hang_on_a_thread_ignoring_its_event() -> None:
    release = threading.Event()

    def stubborn() -> tuple[threading.Thread, threading.Event]:
        th = threading.Thread(target=release.wait, args=(30,), daemon=True)
        th.start()
        return th, threading.Event()

    rs = RunningServer(DefaultServer(0, pcommand_map={"S": stubborn}, thread_join_timeout_s=0.2))
    try:
        c = rs.client()
        assert c.ask(b"S;STOP;UP;", 1) == b"1"
        assert rs.server.threads == {}
    finally:
        release.set()
        rs.stop()


def test_stop_process_tree_accepts_pid_and_dead_process() -> None:
    p, child = _start_tree("polite")
    assert stop_process_tree(p.pid, grace_s=1.0)
    wait_until(lambda: _gone(child), 5)
    p.wait(5)
    assert stop_process_tree(p, grace_s=0.1)  # already gone: fine
    with pytest.raises(ValueError, match="grace_s"):
        stop_process_tree(p, grace_s=-1)


def test_shutdown_stops_processes_started_by_handlers() -> None:
    procs: list[subprocess.Popen] = []

    def start_proc() -> subprocess.Popen:
        p, _ = _start_tree("polite")
        procs.append(p)
        return p

    rs = RunningServer(DefaultServer(0, pcommand_map={"PROC": start_proc}))
    c = rs.client()
    assert c.ask(b"PROC;UP;", 1) == b"1"
    rs.stop()
    assert procs[0].poll() is not None


def test_callbacks_reach_the_client_that_started_work_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    srv = DefaultCallbackServer(0, name="cb", pcommand_map={"GO": lambda: 0})
    rs = RunningServer(srv)
    try:
        a, b = rs.client(), rs.client()
        assert a.ask(b"GO;UP;", 1) == b"1"  # a started the work: it is the target
        want = b"GO|STOP|CLOSE|GET_PCOMMS|UP1"
        assert b.ask(b"GET_PCOMMS;UP;", len(want)) == want
        payloads = [f"control_room|LOG|{i}" for i in range(50)]
        for p in payloads:
            srv.callback_stack.append(p)
        want = "".join(payloads).encode()
        assert a.read_exact(len(want)) == want
        assert b.nothing_pending(0.1)  # built-ins never make a client the target
        # the target gone: payloads are dropped (logged once), b still gets none
        a.close()
        rs.clients.remove(a)
        wait_until(lambda: len(srv._conns) == 1, 5)
        with caplog.at_level(logging.WARNING, logger="dpshm.dareplane.server"):
            srv.callback_stack.extend(["x|Y|1", "x|Y|2"])
            wait_until(lambda: not srv.callback_stack, 5)
            wait_until(lambda: "has disconnected" in caplog.text, 5)
        assert caplog.text.count("has disconnected") == 1
        assert b.nothing_pending(0.1)
        assert b.ask(b"UP;", 1) == b"1"
    finally:
        rs.stop()
    assert srv._cb_thread is None
