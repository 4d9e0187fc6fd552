"""Interop with the real dareplane-utils 0.0.24: its clients and its server.

The original server and receiver reconfigure the root logger on import, so they
run in subprocesses; the client-side classes are imported here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from helpers import ROOT
from server_client import RunningServer

from dpshm.dareplane.procs import stop_process_tree
from dpshm.dareplane.server import DefaultServer

pytest.importorskip("dareplane_utils")
from dareplane_utils.module_handling.communication import SocketCommunicator
from dareplane_utils.module_handling.launcher import PythonLauncher
from dareplane_utils.module_handling.module_connection import ModuleConnection

pytestmark = pytest.mark.interop

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

ORIGINAL_SERVER = r"""
import sys
from dareplane_utils.default_server.server import DefaultServer
srv = DefaultServer(0, ip="127.0.0.1", pcommand_map={"ECHO": lambda **kw: 0}, name="cmp")
srv.init_server()
print(srv.server_socket.getsockname()[1], flush=True)
srv.start_listening()
srv.shutdown()
"""

SCRIPT = [b"UP;", b"GET_PCOMMS;", b'ECHO|{"a": 1};', b"UP|;", b"ECHO;", b"STOP;", b"UP;", b"CLOSE;"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _transcript(port: int) -> bytes:
    """Run SCRIPT (one send per command) and return every byte until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = b""
        while not out.endswith(b"\n"):
            out += s.recv(100)
        expect = [b"1", b"ECHO|STOP|CLOSE|GET_PCOMMS|UP", b"", b"1", b"", b"", b"1", b""]
        for cmd, want in zip(SCRIPT, expect, strict=True):
            s.sendall(cmd)
            got = b""
            while len(got) < len(want):  # replies have no terminator: read what we expect
                got += s.recv(100)
            out += got
        while chunk := s.recv(100):
            out += chunk
    return out


def test_replies_byte_identical_to_original_server() -> None:
    orig = subprocess.Popen(
        [sys.executable, "-c", ORIGINAL_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=ENV,
        cwd=ROOT,
    )
    try:
        port = int(orig.stdout.readline())
        theirs = _transcript(port)
        assert orig.wait(10) == 0
    finally:
        orig.stdout.close()
        stop_process_tree(orig, grace_s=1)
    rs = RunningServer(DefaultServer(0, pcommand_map={"ECHO": lambda **kw: 0}, name="cmp"))
    try:
        ours = _transcript(rs.port)
        rs.thread.join(5)
        assert not rs.thread.is_alive()  # CLOSE ended the listen loop
    finally:
        rs.stop()
    assert ours == theirs == b"Connected to cmp\n1ECHO|STOP|CLOSE|GET_PCOMMS|UP11"


def _recv(mc: ModuleConnection, n: int) -> bytes:
    out = b""
    deadline = time.monotonic() + 10
    while len(out) < n and time.monotonic() < deadline:
        out += mc.receive_message(1024)
    return out


def test_module_connection_drives_example_module() -> None:
    """dareplane-utils' launcher + socket communicator drive examples/dareplane_module.py."""
    port = _free_port()
    launcher = PythonLauncher(
        "dareplane_module", cwd=ROOT / "examples", executable=sys.executable, kwargs={"port": port}
    )
    comm = SocketCommunicator(
        "127.0.0.1", port, "example", retry_after_s=0.1, max_connect_retries=100
    )
    mc = ModuleConnection("example", launcher, comm)
    try:
        mc.start(env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        comm.socket_c.settimeout(10)  # its socket is blocking without timeout
        mc.send_message(b"GET_PCOMMS")
        pcomms = b"START|SET|STATE|STOP|CLOSE|GET_PCOMMS|UP"
        assert _recv(mc, len(pcomms)) == pcomms
        mc.send_message(b"UP")
        mc.send_message(b'SET|{"a": 1, "b": "x"}')
        mc.send_message(b'START|{"interval_s": 0.01}')
        mc.send_message(b"STATE")
        assert _recv(mc, 1 + len(b'{"a": 1, "b": "x"}\n')) == b'1{"a": 1, "b": "x"}\n'
        mc.send_message(b"STOP")
        mc.send_message(b"UP")
        assert _recv(mc, 1) == b"1"
        mc.send_message(b"CLOSE")
        assert launcher.process.wait(10) == 0
    finally:
        mc.stop()
        if launcher.process is not None:
            stop_process_tree(launcher.process, grace_s=1)
