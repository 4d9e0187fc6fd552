"""`dpshm view` and `dpshm demo --view` as a user runs them (child processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from helpers import wait_until
from viewer_util import REPO, children, get

pytestmark = pytest.mark.lsl


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "dpshm", *args], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_refusals_are_one_clear_line(ns):
    res = _run("view", "--host", "0.0.0.0", "--no-browser")
    assert res.returncode == 1
    assert "refusing to serve the viewer on '0.0.0.0' without a token" in res.stderr
    assert "--token" in res.stderr and "Traceback" not in res.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = _run("view", "--port", str(busy.getsockname()[1]), "--no-browser")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "cannot serve the viewer on 127.0.0.1:" in res.stderr and "--port N" in res.stderr
    res = _run("view", "--port", "70000", "--no-browser")
    assert res.returncode == 1 and "--port 70000 is not a TCP port" in res.stderr


def test_demo_view_serves_the_demo_streams_and_stops_the_viewer(ns, unique_name, tmp_path):
    name = f"{unique_name}_eeg"
    with children(ns, tmp_path) as start:
        demo = start("demo", "--name", name, "--marker-name", f"{unique_name}_mk",
                     "--view", "--view-port", "0", "--no-browser", "--duration", "8")  # fmt: skip
        port = int(demo.expect(r"http://127\.0\.0\.1:(\d+)/")[1])

        def listed():
            status, _, body = get(port, "/api/streams")
            rows = json.loads(body)["streams"] if status == 200 else []
            return [r for r in rows if r["name"] == name and r["head"] > 0]

        (row,) = wait_until(listed, 20)
        assert row["writer_pid"] == demo.proc.pid  # the demo's supervisor writes ...
        assert demo.proc.wait(30) == 0
    # ... and the viewer ran in its own process, stopped with the demo
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert "demo done" in demo.output
