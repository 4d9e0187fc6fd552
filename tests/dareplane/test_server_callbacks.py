"""Callbacks reach the client that started the work, never a monitoring client.

The module below is written as dp-bollinger-control's is (its control thread
writes ``target|PCOMM|payload`` to ``server.current_conn``), with only the
server import changed to dpshm. It runs in its own process, launched by
dareplane-utils 0.0.24's ``PythonLauncher`` and driven by its
``ModuleConnection``/``SocketCommunicator``, the client code the control room
uses.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import ROOT, import_original, wait_until
from server_client import RunningServer

from dpshm.dareplane.procs import stop_process_tree
from dpshm.dareplane.server import DefaultServer

MODULE = r"""
import logging
import sys
import threading
from functools import partial

from dpshm import DefaultServer

logging.basicConfig(stream=sys.stderr, level=logging.INFO)
logger = logging.getLogger("bollinger_like")


def process_loop(server, stop_event, period_s):
    i = 0
    while not stop_event.is_set():
        cmd = f'stimulator|STARTSTIM|{{"i": {i}}}'
        server.current_conn.sendall(cmd.encode())  # as bollinger-control does
        i += 1
        stop_event.wait(period_s)
    print("loop ended", flush=True)


def run_control(server=None, period_s=0.02):
    stop_event = threading.Event()
    thread = threading.Thread(target=process_loop, args=(server, stop_event, period_s))
    thread.start()
    return thread, stop_event


def main(port=0):
    server = DefaultServer(port, ip="127.0.0.1", pcommand_map={}, name="bollinger_like",
                           logger=logger)
    server.pcommand_map.update({"STARTCONTROL": partial(run_control, server=server)})
    server.init_server()
    print("port", server.port, flush=True)
    server.start_listening()
    print("done", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1].split("=")[1]) if len(sys.argv) > 1 else 0)
"""

_CALLBACK = re.compile(rb'stimulator\|STARTSTIM\|\{"i": (\d+)\}')


def _callbacks(sock: socket.socket, wait_s: float) -> list[int]:
    """The callback numbers received on ``sock`` within ``wait_s`` (bounded)."""
    data = b""
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return [int(m) for m in _CALLBACK.findall(data)]


@pytest.fixture
def module(tmp_path: Path):
    """The bollinger-like module, launched as the control room launches modules."""
    launcher_mod = import_original("dareplane_utils.module_handling.launcher")
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "__init__.py").write_text("")
    (tmp_path / "api" / "server.py").write_text(MODULE)
    launcher = launcher_mod.PythonLauncher("api.server", cwd=tmp_path, kwargs={"port": 0})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = launcher.launch(env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # bounded by the test timeout and the child's
        assert line.startswith("port "), line
        yield proc, int(line.split()[1])
    finally:
        stop_process_tree(proc, grace_s=2.0)
        proc.stdout.close()
        proc.stderr.close()


def _communicator(port: int, name: str):
    comm_mod = import_original("dareplane_utils.module_handling.communication")
    comm = comm_mod.SocketCommunicator("127.0.0.1", port, name)
    comm.connect()  # reads the banner (it waits up to 1 s for more)
    comm.socket_c.settimeout(5)
    return comm


def _read(comm, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = comm.receive(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.interop
@pytest.mark.slow
def test_second_client_never_gets_callbacks_and_its_close_keeps_the_module_running(
    module,
) -> None:
    proc, port = module
    mc_mod = import_original("dareplane_utils.module_handling.module_connection")
    control_room = mc_mod.ModuleConnection(
        "bollinger_like", launcher=None, communicator=_communicator(port, "bollinger_like")
    )
    monitor = _communicator(port, "monitor")
    try:
        control_room.send_message(b"STARTCONTROL")  # appends ';' as 0.0.24 does
        first = _callbacks(control_room.communicator.socket_c, 0.3)
        assert len(first) >= 3, first

        monitor.send(b"GET_PCOMMS;")
        want = b"STARTCONTROL|STOP|CLOSE|GET_PCOMMS|UP"
        assert _read(monitor, len(want)) == want
        monitor.send(b"UP;")
        assert _read(monitor, 1) == b"1"
        monitor.send(b"UP")  # the 0.0.21 form, unterminated
        assert _read(monitor, 1) == b"1"
        assert _callbacks(monitor.socket_c, 0.3) == []  # built-ins never re-target

        after = _callbacks(control_room.communicator.socket_c, 0.2)
        assert after and after[0] > first[-1]

        monitor.disconnect()
        time.sleep(0.1)  # the module writes several callbacks meanwhile
        later = _callbacks(control_room.communicator.socket_c, 0.3)
        assert later and later[0] > after[-1], later  # the thread survived
        assert proc.poll() is None

        control_room.send_message(b"STOP")
        assert proc.stdout.readline().strip() == "loop ended"  # ended by its event
        control_room.send_message(b"CLOSE")
        assert proc.stdout.readline().strip() == "done"
        assert proc.wait(10) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err and "Bad file descriptor" not in err, err
    finally:
        control_room.communicator.disconnect()
        monitor.disconnect()


@pytest.mark.interop
@pytest.mark.slow
def test_callbacks_to_a_closed_control_room_are_dropped_and_logged_once(module) -> None:
    proc, port = module
    control_room = _communicator(port, "cr")
    control_room.send(b"STARTCONTROL;")
    assert len(_callbacks(control_room.socket_c, 0.2)) >= 2
    control_room.disconnect()  # the control room goes away while the thread runs
    later = _communicator(port, "cr2")
    try:
        later.send(b"UP;")
        assert _read(later, 1) == b"1"
        time.sleep(0.2)  # the thread keeps writing to the closed connection meanwhile
        assert _callbacks(later.socket_c, 0.2) == []  # not re-targeted to a newcomer
        later.send(b"STOP;")
        assert proc.stdout.readline().strip() == "loop ended"  # alive until STOP
        later.send(b"CLOSE;")
        assert proc.stdout.readline().strip() == "done"
        assert proc.wait(10) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err, err
        assert err.count("has disconnected") == 1, err
    finally:
        later.disconnect()


def _start_thread(sent: list, server: DefaultServer):
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.01):
            server.current_conn.sendall(b"m|CB|1")
            sent.append(1)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, stop


def test_reply_only_commands_and_builtins_do_not_retarget() -> None:
    """A handler that only replies (a status query) leaves the callbacks where they are."""
    sent: list = []
    srv = DefaultServer(0, name="r")
    srv.pcommand_map.update(
        {"GO": lambda: _start_thread(sent, srv), "STATUS": lambda: json.dumps({"ok": 1}) + "\n"}
    )
    rs = RunningServer(srv)
    try:
        cr, mon = rs.client(), rs.client()
        cr.send(b"GO;")
        assert cr.read_exact(6) == b"m|CB|1"
        mon.send(b"STATUS;GET_PCOMMS;UP;")
        assert mon.read_line() == b'{"ok": 1}\n'
        assert mon.read_exact(len(b"GO|STATUS|STOP|CLOSE|GET_PCOMMS|UP1")).endswith(b"UP1")
        n = len(sent)
        wait_until(lambda: len(sent) > n + 5, 5)
        assert mon.nothing_pending(0.05)
        assert cr.read_exact(6) == b"m|CB|1"
        # the current_conn seen by a handler is its own client's
        seen = []
        srv.pcommand_map["WHO"] = lambda: seen.append(srv.current_conn.getpeername()) or 0
        mon.send(b"WHO;UP;")
        assert mon.read_exact(1) == b"1"
        assert seen == [mon.sock.getsockname()]
    finally:
        rs.stop()


def test_current_conn_with_a_closed_target_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    srv = DefaultServer(0, name="c", pcommand_map={"GO": lambda: 0})
    rs = RunningServer(srv)
    try:
        c = rs.client()
        assert c.ask(b"GO;UP;", 1) == b"1"
        handle = srv.current_conn
        c.close()
        rs.clients.remove(c)
        wait_until(lambda: not srv._conns, 5)
        with caplog.at_level(logging.DEBUG, logger="dpshm.dareplane.server"):
            for _ in range(5):
                handle.sendall(b"x|Y|z")
                srv.current_conn.send(b"x|Y|z")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "has disconnected" in warnings[0].getMessage()
        assert handle.fileno() == -1
    finally:
        rs.stop()


def test_a_thread_started_by_an_int_returning_handler_keeps_its_client() -> None:
    """Handlers that start a thread themselves and return 0 (common in modules)."""
    stop = threading.Event()
    srv = DefaultServer(0, name="i")

    def start(tag: str = "a") -> int:
        def run() -> None:
            while not stop.wait(0.01):
                srv.current_conn.sendall(f"m|CB|{tag}".encode())

        threading.Thread(target=run, daemon=True).start()
        return 0

    srv.pcommand_map["START"] = start
    rs = RunningServer(srv)
    try:
        a, b = rs.client(), rs.client()
        a.send(b'START|{"tag": "a"};')
        assert a.read_exact(6) == b"m|CB|a"
        b.send(b'START|{"tag": "b"};')  # b now starts work of its own
        assert b.read_exact(6) == b"m|CB|b"
        time.sleep(0.1)  # both threads write several callbacks meanwhile
        got_a = a.read_exact(60)
        assert set(got_a.split(b"m|CB|")) == {b"", b"a"}, got_a
        got_b = b.read_exact(60)
        assert set(got_b.split(b"m|CB|")) == {b"", b"b"}, got_b
    finally:
        stop.set()
        rs.stop()
