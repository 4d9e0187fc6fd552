"""`dpshm up` opens no TCP port unless asked; asked without a number it uses
7090, a port no Dareplane module defaults to (they use 8080 and up)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading

import psutil
import pytest
from helpers import ROOT, wait_until

from dpshm import config as C
from dpshm.shm import registry


def _up(ns: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "DPSHM_NAMESPACE": ns, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "dpshm", "up", "--quiet", "--stream", "none", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _listening(pid: int) -> list[tuple[str, int]]:
    conns = psutil.Process(pid).net_connections(kind="inet")
    return [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
    return out


def test_defaults():
    assert C.DEFAULT_SERVER_PORT == 7090
    assert C.SupervisorConfig().server.enabled is False
    assert C.parse_toml("[supervisor]\nbuffer_s = 2\n").server.enabled is False
    on = C.parse_toml("[server]\n").server
    assert (on.enabled, on.host, on.port) == (True, "127.0.0.1", 7090)
    flag = C.load_config(overrides={"server_port": 0}, env={}).server
    assert (flag.enabled, flag.port) == (True, 0)


def test_no_port_unless_asked(unique_name):
    proc = _up(unique_name)
    try:
        registry.wait_for_registry(unique_name, 30, pid=proc.pid)
        assert _listening(proc.pid) == []
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
    assert "commands on" not in out
    assert "no command server (no TCP port is open)" in out


def test_port_zero_serves_on_loopback(unique_name):
    proc = _up(unique_name, "--port", "0")
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"commands on 127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        else:
            raise AssertionError("".join(lines))
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        assert wait_until(lambda: ("127.0.0.1", port) in _listening(proc.pid), 10)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert s.recv(100).startswith(b"Connected to dpshm")
    finally:
        proc.terminate()
        proc.wait(20)


def test_server_table_without_port_uses_7090(unique_name, tmp_path):
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", C.DEFAULT_SERVER_PORT))
    except OSError:
        pytest.skip("port 7090 is in use on this machine")
    finally:
        probe.close()
    cfg = tmp_path / "server.toml"
    cfg.write_text("[server]\n")
    proc = _up(unique_name, "--config", str(cfg))
    try:
        wait_until(lambda: ("127.0.0.1", 7090) in _listening(proc.pid), 30)
        assert not any(p == 8080 for _, p in _listening(proc.pid))
    finally:
        out = _stop(proc)
    assert "commands on 127.0.0.1:7090" in out
