"""Protocol tests of dpshm.DefaultServer over real sockets."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from helpers import wait_until
from server_client import RunningServer

from dpshm.dareplane.server import DefaultServer, is_loopback

PCOMMS = b"ECHO|ARGS|BOOM|NONE|WEIRD|STOP|CLOSE|GET_PCOMMS|UP"


@pytest.fixture
def calls() -> list:
    return []


@pytest.fixture
def running(calls: list):
    servers: list[RunningServer] = []

    def make(**kw: object) -> RunningServer:
        def echo(**kwargs: object) -> int:
            calls.append(kwargs)
            return 0

        def args(*a: str, **kwargs: object) -> str:
            return json.dumps([list(a), kwargs]) + "\n"

        def boom(**_: object) -> int:
            raise RuntimeError("handler exploded")

        pmap = {
            "ECHO": echo,
            "ARGS": args,
            "BOOM": boom,
            "NONE": lambda: None,
            "WEIRD": lambda: 1.5,
        }
        rs = RunningServer(DefaultServer(0, pcommand_map=pmap, name="t", **kw))
        servers.append(rs)
        return rs

    yield make
    for rs in servers:
        rs.stop()


def test_banner_builtins_byte_identical(running) -> None:
    rs = running()
    c = rs.client()
    assert c.banner == b"Connected to t\n"
    assert c.ask(b"UP;", 1) == b"1"
    assert c.ask(b"GET_PCOMMS;", len(PCOMMS)) == PCOMMS
    assert c.ask(b"UP|;", 1) == b"1"


def test_split_and_coalesced_segments(running, calls: list) -> None:
    rs = running()
    c = rs.client()
    c.send(b'ECHO|{"na')
    c.send(b'me": "x", "n": ')
    c.send(b"3};")
    c.send(b"U")
    c.send(b"P;")
    assert c.read_exact(1) == b"1"
    assert calls == [{"name": "x", "n": 3}]
    c.send(b'UP;ECHO|{"a": 1};UP;ECHO|;ECHO;GET_PCOMMS;')
    assert c.read_exact(2 + len(PCOMMS)) == b"11" + PCOMMS
    assert calls[1:] == [{"a": 1}, {}, {}]


@pytest.mark.parametrize(
    "wire",
    [b"UP", b"UP\r\n", b"UP\n", b"UP|", b"UP|\r\n"],
    ids=["bare", "crlf", "lf", "pipe", "p-crlf"],
)
def test_unterminated_styles(running, wire: bytes) -> None:
    c = running().client()
    assert c.ask(wire, 1) == b"1"
    assert c.ask(wire, 1) == b"1"


def test_unterminated_pcomm_with_json_and_positional_args(running) -> None:
    c = running().client()
    c.send(b'ARGS|a|b|{"k": [1, 2]}')
    assert json.loads(c.read_line()) == [["a", "b"], {"k": [1, 2]}]
    c.send(b"ARGS|x|\n")
    assert json.loads(c.read_line()) == [["x"], {}]


def test_handler_str_reply_goes_to_issuer_only(running) -> None:
    rs = running()
    a, b = rs.client(), rs.client()
    a.send(b"ARGS;")
    assert a.read_line() == b"[[], {}]\n"
    assert b.nothing_pending()


BAD = [
    (b"BOOM;", b"ERROR BOOM raised RuntimeError: handler exploded"),
    (b"NONE;", b"ERROR handler of 'NONE' returned NoneType"),
    (b"WEIRD;", b"ERROR handler of 'WEIRD' returned float"),
    (b'ECHO|{"a": ;', b"ERROR bad JSON payload for 'ECHO'"),
    (b"ECHO|[1, 2];", b"ERROR JSON payload for 'ECHO' is a list"),
    (b"NOPE|{};", b"ERROR unknown PCOMM 'NOPE'"),
    ("ÉCHO;".encode(), b"ERROR command name"),
    (b"EC\xffHO;", b"ERROR command is not valid UTF-8"),
]


@pytest.mark.parametrize(("wire", "start"), BAD, ids=[b[0][:8].decode("latin-1") for b in BAD])
def test_bad_input_answered_and_server_keeps_serving(running, wire: bytes, start: bytes) -> None:
    rs = running()
    c, other = rs.client(), rs.client()
    c.send(wire)
    line = c.read_line()
    assert line.startswith(start), line
    assert c.ask(b"UP;", 1) == b"1"
    assert other.ask(b"UP;", 1) == b"1"
    assert other.nothing_pending(0.01)


def test_oversized_message_discarded(running, calls: list) -> None:
    rs = running()
    c = rs.client()
    c.send(b"ECHO|" + b"x" * (1 << 20) + b"y" * 1000)
    assert c.read_line().startswith(b"ERROR command exceeds 1048576 bytes")
    c.send(b"tail of the monster;UP;")
    assert c.read_exact(1) == b"1"
    assert calls == []
    assert rs.client().ask(b"UP;", 1) == b"1"


def test_client_vanishing_mid_command(running, calls: list) -> None:
    rs = running()
    c = rs.client()
    c.send(b'ECHO|{"a": 1')
    c.close()
    assert rs.client().ask(b"UP;", 1) == b"1"
    wait_until(lambda: len(rs.server._conns) == 1, 5)
    assert calls == []


def test_error_replies_off(running) -> None:
    c = running(error_replies=False).client()
    c.send(b"NOPE;BOOM;")
    assert c.ask(b"UP;", 1) == b"1"
    assert c.nothing_pending(0.01)


def test_several_clients_at_once(running, calls: list) -> None:
    rs = running()
    clients = [rs.client() for _ in range(5)]
    for i, c in enumerate(clients):
        c.send(f'ECHO|{{"i": {i}}};'.encode())
    for c in clients:
        assert c.ask(b"UP;", 1) == b"1"
    assert sorted(d["i"] for d in calls) == list(range(5))


def test_max_clients_refused_with_error(running) -> None:
    rs = running(max_clients=1)
    first = rs.client()
    first.send(b"ECHO;")  # started work: the callback target is never evicted
    wait_until(lambda: rs.server._work_conn is not None, 5)
    s = socket.create_connection(("127.0.0.1", rs.port), timeout=5)
    with s:
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1000)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"ERROR too many clients (1 connected)")
    assert first.ask(b"UP;", 1) == b"1"


def test_token_auth(running) -> None:
    rs = running(token="s3cret")
    c = rs.client()
    c.send(b"UP;")
    assert c.read_line().startswith(b"ERROR not authenticated; send AUTH|<token>")
    c.send(b"AUTH|s3cret;")
    assert c.read_line() == b"OK\n"
    assert c.ask(b"UP;", 1) == b"1"
    bad = rs.client()
    bad.send(b"AUTH|wrong;")
    assert bad.read_line().startswith(b"ERROR authentication failed")
    with pytest.raises(ConnectionError):
        bad.read_exact(1)


def test_token_must_be_sane() -> None:
    with pytest.raises(ValueError, match="token"):
        DefaultServer(0, token="")
    with pytest.raises(ValueError, match="port"):
        DefaultServer(70000)


def _rebind(port: int) -> None:
    """A new server listens on the same port (SO_REUSEADDR, as servers do) and serves."""
    rs = RunningServer(DefaultServer(port, name="again"))
    try:
        assert rs.client().ask(b"UP;", 1) == b"1"
    finally:
        rs.stop()


def test_close_ends_listening_and_frees_port(running) -> None:
    rs = running()
    port = rs.port
    rs.client().send(b"CLOSE;")
    rs.thread.join(5)
    assert not rs.thread.is_alive()
    _rebind(port)


def test_shutdown_bounded_and_port_rebindable(running) -> None:
    rs = running()
    c = rs.client()
    c.send(b'ECHO|{"half')  # a pending partial command must not delay shutdown
    rs.server.shutdown(timeout=2)
    rs.thread.join(3)
    assert not rs.thread.is_alive()
    _rebind(rs.port)
    rs.server.shutdown()  # idempotent


def test_busy_port_error_names_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        srv = DefaultServer(port)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            srv.init_server()
        srv.shutdown()


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert is_loopback("127.5.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.org")


def test_requires_init_before_listening() -> None:
    with pytest.raises(RuntimeError, match="init_server"):
        DefaultServer(0).start_listening()


def test_defaults_bind_loopback() -> None:
    srv = DefaultServer(0)
    srv.init_server()
    try:
        assert srv.server_socket.getsockname()[0] == "127.0.0.1"
    finally:
        srv.shutdown()


def test_stray_threads_none_after_stop(running) -> None:
    before = set(threading.enumerate())
    rs = running()
    rs.client().ask(b"UP;", 1)
    rs.stop()
    wait_until(lambda: set(threading.enumerate()) <= before, 5)
    rs.server.shutdown()


def test_client_not_reading_is_dropped_and_others_served() -> None:
    big = b"x" * (32 << 20)
    rs = RunningServer(DefaultServer(0, pcommand_map={"BIG": lambda: big}, send_timeout_s=0.2))
    try:
        lazy = rs.client()
        lazy.send(b"BIG;")  # and never read
        other = rs.client()
        assert other.ask(b"UP;", 1) == b"1"
        wait_until(lambda: len(rs.server._conns) == 1, 10)
        assert other.ask(b"UP;", 1) == b"1"
    finally:
        rs.stop()
