"""`dpshm up` opens no TCP port unless asked; asked without a number it uses
7090, a port no Dareplane module defaults to (they use 8080 and up)."""

from __future__ import annotations

import socket

import psutil
import pytest
from helpers import wait_until
from supervisor_util import Sup

from dpshm import config as C


def _listening(pid: int) -> list[tuple[str, int]]:
    conns = psutil.Process(pid).net_connections(kind="inet")
    return [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]


def test_defaults():
    assert C.DEFAULT_SERVER_PORT == 7090
    assert C.SupervisorConfig().server.enabled is False
    assert C.parse_toml("[supervisor]\nbuffer_s = 2\n").server.enabled is False
    on = C.parse_toml("[server]\n").server
    assert (on.enabled, on.host, on.port) == (True, "127.0.0.1", 7090)
    flag = C.load_config(overrides={"server_port": 0}, env={}).server
    assert (flag.enabled, flag.port) == (True, 0)


def test_no_port_unless_asked(procs):
    ns, started = procs
    sup = Sup(ns, "none")
    started.append(sup)
    sup.ready(30)
    assert _listening(sup.proc.pid) == []
    assert sup.stop() == 0
    assert "commands on" not in sup.output
    assert "no command server (no TCP port is open)" in sup.output


def test_port_zero_serves_on_loopback(procs):
    ns, started = procs
    sup = Sup(ns, "none", args=("--port", "0"))
    started.append(sup)
    port = sup.port(30)
    assert wait_until(lambda: ("127.0.0.1", port) in _listening(sup.proc.pid), 10)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert s.recv(100).startswith(b"Connected to dpshm")


def test_server_table_without_port_uses_7090(procs, tmp_path):
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", C.DEFAULT_SERVER_PORT))
    except OSError:
        pytest.skip("port 7090 is in use on this machine")
    finally:
        probe.close()
    cfg = tmp_path / "server.toml"
    cfg.write_text("[server]\n")
    ns, started = procs
    sup = Sup(ns, "none", args=("--config", str(cfg)))
    started.append(sup)
    assert sup.port(30) == 7090
    assert ("127.0.0.1", 7090) in _listening(sup.proc.pid)
    assert not any(p == 8080 for _, p in _listening(sup.proc.pid))
