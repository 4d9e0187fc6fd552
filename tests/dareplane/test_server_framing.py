"""Where a command ends, over real sockets: multi-line JSON, split commands, each client style.

0.0.24 clients end commands with ``;``, 0.0.21 clients send one command per
send without a terminator, telnet and netcat send ``\\r\\n`` or ``\\n``. The
pauses below are the input under test (a sender pausing mid-command), not
synchronisation.
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import import_original, wait_until
from server_client import RunningServer

from dpshm.dareplane.server import DefaultServer


@pytest.fixture
def served():
    calls: list[tuple[str, dict]] = []
    kept: list[threading.Event] = []

    def record(name: str):
        def handler(**kw: object) -> int:
            calls.append((name, kw))
            return 0

        return handler

    def start(**kw: object):
        calls.append(("START_WORKER", kw))
        ev = threading.Event()
        th = threading.Thread(target=ev.wait, args=(30,), daemon=True)
        th.start()
        kept.append(ev)
        return th, ev

    pmap = {
        "ECHO": record("ECHO"),
        "START_WORKER": start,
        "STOP_WORKER": record("STOP_WORKER"),
    }
    rs = RunningServer(DefaultServer(0, name="f", pcommand_map=pmap))
    yield rs, calls
    rs.stop()


@pytest.mark.parametrize(
    "wire",
    [
        b'ECHO|{\n "a": 2\n}',  # the control room's text box, 0.0.21: one send, no terminator
        b'ECHO|{\n "a": 2\n};',  # 0.0.24
        b'ECHO|{\r\n "a": 2\r\n}\r\n',  # telnet
        b'ECHO|{\n "a": 2\n}\n',  # netcat
    ],
    ids=["unterminated", "semicolon", "crlf", "lf"],
)
def test_multi_line_json_runs_once(served, wire: bytes) -> None:
    rs, calls = served
    c = rs.client()
    c.send(wire)
    wait_until(lambda: calls, 5)
    assert c.ask(b"UP;", 1) == b"1"
    assert calls == [("ECHO", {"a": 2})]
    assert c.nothing_pending(0.05)  # no ERROR lines either


def test_multi_line_json_split_across_segments(served) -> None:
    rs, calls = served
    c = rs.client()
    for part in (b"ECHO|{\n", b' "a": 2,\n', b' "b": "}\\n"\n', b"}"):
        c.send(part)
        time.sleep(0.02)  # a pause longer than the idle rule inside open JSON
    wait_until(lambda: calls, 5)
    assert calls == [("ECHO", {"a": 2, "b": "}\n"})]
    assert c.ask(b"UP;", 1) == b"1"


def test_stop_then_pause_then_rest_runs_stop_worker_not_stop(served) -> None:
    rs, calls = served
    c = rs.client()
    c.send(b'START_WORKER|{"w": 1};')
    wait_until(lambda: rs.server.threads, 5)
    c.send(b"STOP")
    time.sleep(0.05)  # > idle_dispatch_s: the old server ran the built-in STOP here
    c.send(b'_WORKER|{"id": "w-1"};')
    wait_until(lambda: len(calls) == 2, 5)
    assert calls[1] == ("STOP_WORKER", {"id": "w-1"})
    assert c.ask(b"UP;", 1) == b"1"
    assert len(rs.server.threads) == 1  # the built-in STOP never ran


def test_byte_by_byte_with_pauses_is_one_command(served) -> None:
    rs, calls = served
    c = rs.client()
    c.send(b'START_WORKER|{"w": 1};')
    wait_until(lambda: rs.server.threads, 5)
    for b in b'STOP_WORKER|{"id": 2};':
        c.send(bytes([b]))
        time.sleep(0.008)
    wait_until(lambda: len(calls) == 2, 5)
    assert calls[1] == ("STOP_WORKER", {"id": 2})
    assert c.ask(b"UP;", 1) == b"1"
    assert len(rs.server.threads) == 1
    assert c.nothing_pending(0.05)


def test_long_pause_mid_name_executes_nothing(served) -> None:
    rs, calls = served
    c = rs.client()
    c.send(b'START_WORKER|{"w": 1};')
    wait_until(lambda: rs.server.threads, 5)
    c.send(b"STOP")
    line = c.read_line()  # after stale_dispatch_s (0.5 s)
    assert line.startswith(b"ERROR incomplete command b'STOP' not executed"), line
    c.send(b'_WORKER|{"id": 3};')
    assert c.read_line().startswith(b"ERROR unknown PCOMM '_WORKER'")
    assert calls == [("START_WORKER", {"w": 1})]
    assert len(rs.server.threads) == 1


def test_0021_style_one_command_per_send(served) -> None:
    rs, calls = served
    c = rs.client()
    c.send(b"ECHO")  # bare name: executed once the sender paused
    wait_until(lambda: calls, 5)
    c.send(b'ECHO|{"x": 1}')  # complete JSON: at once
    wait_until(lambda: len(calls) == 2, 5)
    assert c.ask(b"UP", 1) == b"1"
    assert calls == [("ECHO", {}), ("ECHO", {"x": 1})]
    c.send(b"STOP")  # the start of STOP_WORKER: waits for a terminator ...
    c.send(b"\n")  # ... which telnet and netcat send
    assert c.ask(b"UP\r\n", 1) == b"1"
    assert rs.server.threads == {}


def test_eof_completes_a_pending_command(served) -> None:
    rs, calls = served
    c = rs.client()
    c.send(b'ECHO|{"e": 1}\n"')  # a stray quote after the command: junk, dropped at EOF
    c.close()
    rs.clients.remove(c)
    d = rs.client()
    d.send(b"ECHO|")
    d.sock.shutdown(1)  # printf 'ECHO|' | nc: nothing more can follow
    wait_until(lambda: len(calls) == 2, 5)
    assert calls == [("ECHO", {"e": 1}), ("ECHO", {})]


@pytest.mark.interop
def test_dareplane_utils_client_commands(served) -> None:
    """0.0.24's ModuleConnection appends ';' to every message."""
    rs, calls = served
    comm_mod = import_original("dareplane_utils.module_handling.communication")
    mc_mod = import_original("dareplane_utils.module_handling.module_connection")
    comm = comm_mod.SocketCommunicator("127.0.0.1", rs.port, "f")
    mc = mc_mod.ModuleConnection("f", launcher=None, communicator=comm)
    mc.connect_to_module()
    try:
        mc.send_message(b'ECHO|{\n "a": 2\n}')
        mc.send_message(b"STOP")
        mc.send_message(b'STOP_WORKER|{"id": 1}')
        wait_until(lambda: len(calls) == 2, 5)
        assert calls == [("ECHO", {"a": 2}), ("STOP_WORKER", {"id": 1})]
    finally:
        mc.stop_connection()
