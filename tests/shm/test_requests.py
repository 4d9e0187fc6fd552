"""The supervisor's request socket: replies, the peer's pid from the kernel, bounds."""

from __future__ import annotations

import contextlib
import os
import socket

import pytest
from helpers import wait_until

from dpshm.errors import SupervisorNotRunningError
from dpshm.shm import requests
from dpshm.shm.requests import MAX_LINE, RequestClient, RequestServer


@pytest.fixture
def server(tmp_path):
    seen, closed = [], []

    def handler(conn, pid, req):
        seen.append((conn, pid, req))
        return {"ok": True, "echo": req.get("x")}

    with RequestServer(
        tmp_path / "requests.sock", handler, lambda c, p: closed.append((c, p))
    ) as s:
        yield s, seen, closed


def test_request_reply_pid_and_end(server):
    srv, seen, closed = server
    assert oct(srv.path.stat().st_mode & 0o777) == "0o600"
    with RequestClient(srv.path) as c:
        assert c.ask({"op": "x", "x": 1}) == {"ok": True, "echo": 1}
        assert c.ask({"op": "x", "x": [2]})["echo"] == [2]
        assert not c.wait_closed(0.05)
    conn, pid, _ = seen[0]
    assert pid == os.getpid()  # from SO_PEERCRED, not from the request
    wait_until(lambda: closed == [(conn, pid)], 2)  # the end of the connection is reported


def test_bad_requests_refused_and_closed(server):
    srv, seen, _ = server
    for payload, why in ((b"[1, 2]\n", "not a JSON object"), (b"{oops\n", "malformed request")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(srv.path))
            s.sendall(payload)
            reply = s.recv(4096)
            assert b'"ok": false' in reply and why.encode() in reply
            assert s.recv(4096) == b""  # and the connection is closed
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(srv.path))
        with contextlib.suppress(BrokenPipeError):  # it may stop reading and close first
            s.sendall(b"x" * (MAX_LINE + 10))
        data = b""
        while b"\n" not in data:
            data += s.recv(4096)
        assert f"longer than {MAX_LINE} bytes".encode() in data
    assert seen == []


def test_connections_bounded(server, monkeypatch):
    srv, _, _ = server
    monkeypatch.setattr(requests, "MAX_CONNECTIONS", 1)
    with RequestClient(srv.path) as first:
        assert first.ask({"x": 1})["ok"]
        with RequestClient(srv.path) as second:
            reply = second.ask({"x": 2})
            assert not reply["ok"] and "at most 1 publishers" in reply["error"]


def test_no_server(tmp_path):
    with pytest.raises(SupervisorNotRunningError, match="dpshm up"):
        RequestClient(tmp_path / "nothing.sock")
