"""dareplane-utils' DefaultServer surface: stoppers, interpreter, hooks, delimiter.

A module written for dareplane-utils that passes ``thread_stopper=``,
``proc_stopper=``, ``msg_interpreter=`` or overrides the connection hooks must
run with only its import changed; what dpshm cannot honour fails loudly.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import psutil
import pytest
from helpers import ROOT, wait_until
from server_client import RawClient, RunningServer

from dpshm.dareplane.procs import stop_process_tree
from dpshm.dareplane.server import DefaultServer

# A module written against dareplane-utils: its helper functions are the real
# ones; only the DefaultServer import is dpshm's. Runs in a subprocess because
# importing dareplane_utils' server helpers reconfigures the root logger.
MODULE = r"""
import json, subprocess, sys, threading
from dareplane_utils.default_server.functions import interpret_msg, stop_process, stop_thread
from dpshm import DefaultServer

def traced(name, f):
    def run(*a, **kw):
        print(name, flush=True)
        return f(*a, **kw)
    return run

def echo(**kw):
    return json.dumps(kw) + "\n"

def start():
    ev = threading.Event()
    th = threading.Thread(target=ev.wait, daemon=True)
    th.start()
    return th, ev

def spawn():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print("child", p.pid, flush=True)
    return p

class Module(DefaultServer):
    def on_connection_accepted(self):
        self.current_conn.sendall(b"hello\n")
    def on_connection_closed(self):
        print("closed", flush=True)

srv = Module(0, ip="127.0.0.1", name="m", pcommand_map={"ECHO": echo, "START": start,
             "SPAWN": spawn}, thread_stopper=traced("stop_thread", stop_thread),
             proc_stopper=traced("stop_process", stop_process),
             msg_interpreter=traced("interpret", interpret_msg), delimiter=b";")
srv.init_server()
print("port", srv.port, flush=True)
srv.start_listening()
print("done", flush=True)
"""


def _expect(proc: subprocess.Popen, word: str) -> str:
    """The module's next stdout line, which must start with ``word``."""
    line = proc.stdout.readline()  # bounded by the test's timeout and the child's
    assert line.startswith(word), f"expected {word!r} from the module, got {line!r}"
    return line.split(maxsplit=1)[1].strip() if " " in line.strip() else ""


@pytest.mark.interop
def test_module_written_for_dareplane_utils_runs_with_dpshm_server() -> None:
    pytest.importorskip("dareplane_utils")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", MODULE], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        port = int(_expect(proc, "port"))
        c = RawClient(port)
        assert c.banner == b"hello\n"  # on_connection_accepted runs before the banner
        assert c.read_line() == b"Connected to m\n"
        c.send(b'ECHO|{"a": 1, "b": "x"};')
        assert c.read_line() == b'{"a": 1, "b": "x"}\n'
        assert _expect(proc, "interpret") == ""  # the module's interpreter parsed it
        c.send(b"START;")
        _expect(proc, "interpret")
        c.send(b"SPAWN;")
        _expect(proc, "interpret")
        child = int(_expect(proc, "child"))
        c.send(b"STOP;UP;")
        assert c.read_exact(1) == b"1"  # STOP returned: the original stoppers ended both
        assert {_expect(proc, "stop_thread"), _expect(proc, "stop_process")} == {""}
        assert wait_until(lambda: not psutil.pid_exists(child) or _zombie(child), 10)
        c.sock.close()
        _expect(proc, "closed")  # on_connection_closed
        c2 = RawClient(port)
        assert c2.banner == b"hello\n"
        c2.read_line()
        c2.send(b"CLOSE;")
        _expect(proc, "closed")
        _expect(proc, "done")
        assert proc.wait(10) == 0
        c2.sock.close()
    finally:
        stop_process_tree(proc, grace_s=1.0)
        proc.stdout.close()


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_hooks_see_each_client_as_current_conn() -> None:
    seen: list[tuple[str, int]] = []

    class Hooked(DefaultServer):
        def on_connection_accepted(self) -> None:
            seen.append(("open", self.current_conn.fileno()))

        def on_connection_closed(self) -> None:
            seen.append(("closed", id(self.current_conn)))

    rs = RunningServer(Hooked(0, name="h"))
    try:
        a, b = rs.client(), rs.client()
        assert a.banner == b.banner == b"Connected to h\n"
        assert [k for k, _ in seen] == ["open", "open"]
        assert seen[0][1] != seen[1][1]  # two sockets, each current in its own hook
        a.sock.close()
        wait_until(lambda: [k for k, _ in seen].count("closed") == 1)
        assert b.ask(b"UP;", 1) == b"1"  # the other client is still served
    finally:
        rs.stop()
    assert [k for k, _ in seen].count("closed") == 2


def test_failing_hook_is_logged_and_client_served(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(DefaultServer):
        def on_connection_accepted(self) -> None:
            raise RuntimeError("hook exploded")

    rs = RunningServer(Broken(0, name="b"))
    try:
        with caplog.at_level(logging.ERROR, logger="dpshm.dareplane.server"):
            c = rs.client()
            assert c.ask(b"UP;", 1) == b"1"
        assert "on_connection_accepted of b failed" in caplog.text
        assert "hook exploded" in caplog.text
    finally:
        rs.stop()


@pytest.mark.parametrize("method", ["handle_msg", "msg_interpretation", "process_connection"])
def test_overriding_an_uncalled_original_method_fails_at_class_definition(method: str) -> None:
    with pytest.raises(TypeError, match=rf"overrides {method} .*never calls.*pcommand_map"):
        type("Custom", (DefaultServer,), {method: lambda self, *a: None})


def test_delimiter_and_callables_checked() -> None:
    for ok in (b";", b"\n", b"\r\n"):
        assert DefaultServer(0, delimiter=ok).delimiter == ok
    with pytest.raises(ValueError, match=r"delimiter b'\|END\|' is not supported.*drop the"):
        DefaultServer(0, delimiter=b"|END|")
    with pytest.raises(TypeError, match="thread_stopper must be callable or None, got str"):
        DefaultServer(0, thread_stopper="join")


def test_failing_stopper_logged_and_others_still_stopped(caplog: pytest.LogCaptureFixture) -> None:
    stopped: list[threading.Thread] = []

    def stopper(th: threading.Thread, logger: logging.Logger) -> None:
        if th.name == "bad":
            raise RuntimeError("stopper exploded")
        th.join(5)
        stopped.append(th)

    def start(name: str) -> tuple[threading.Thread, threading.Event]:
        ev = threading.Event()
        th = threading.Thread(target=ev.wait, name=name, daemon=True)
        th.start()
        return th, ev

    srv = DefaultServer(0, name="s", pcommand_map={"GO": start}, thread_stopper=stopper)
    rs = RunningServer(srv)
    try:
        c = rs.client()
        c.send(b'GO|{"name": "bad"};GO|{"name": "good"};')
        wait_until(lambda: len(srv.threads) == 2)
        with caplog.at_level(logging.ERROR, logger="dpshm.dareplane.server"):
            assert c.ask(b"STOP;UP;", 1) == b"1"
        assert [t.name for t in stopped] == ["good"] and not stopped[0].is_alive()
        assert "stopper exploded" in caplog.text and srv.threads == {}
    finally:
        rs.stop()


def test_msg_interpreter_reads_its_own_payload_format() -> None:
    """A payload dpshm's parser refuses (not JSON) reaches the module's interpreter."""
    seen: list[bytes] = []

    def interpreter(msg: bytes, pcommand_map: dict, logger: logging.Logger) -> str:
        seen.append(msg)
        name, _, rest = msg.decode().partition("|")
        return pcommand_map[name](rest)

    pmap = {"RAW": lambda text: f"got {text}\n"}
    rs = RunningServer(DefaultServer(0, name="i", pcommand_map=pmap, msg_interpreter=interpreter))
    try:
        c = rs.client()
        c.send(b"RAW|{not json;")
        assert c.read_line() == b"got {not json\n"
        c.send(b"NOPE|{x;")  # unknown names are still refused before the interpreter
        assert c.read_line().startswith(b"ERROR unknown PCOMM 'NOPE'")
        assert seen == [b"RAW|{not json"]
    finally:
        rs.stop()
