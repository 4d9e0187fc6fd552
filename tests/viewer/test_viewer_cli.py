"""`dpshm view` and `dpshm demo --view` as a user runs them (child processes)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from helpers import wait_until
from supervisor_util import child_env
from viewer_util import get, start, supervise, url_of

pytestmark = pytest.mark.lsl


def _run(ns: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dpshm", *args], env=child_env(ns), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_refusals_are_one_clear_line(procs):
    ns = procs[0]
    res = _run(ns, "view", "--host", "0.0.0.0", "--no-browser")
    assert res.returncode == 1
    assert "refusing to serve the viewer on '0.0.0.0' without a token" in res.stderr
    assert "--token" in res.stderr and "Traceback" not in res.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = _run(ns, "view", "--port", str(busy.getsockname()[1]), "--no-browser")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "cannot serve the viewer on 127.0.0.1:" in res.stderr and "--port N" in res.stderr
    res = _run(ns, "view", "--port", "70000", "--no-browser")
    assert res.returncode == 1 and "--port 70000 is not a TCP port" in res.stderr


def test_demo_view_serves_the_demo_streams_and_stops_the_viewer(procs):
    ns = procs[0]
    name = f"{ns}_eeg"
    demo = start(procs, "demo", "--name", name, "--marker-name", f"{ns}_mk",
                 "--view", "--view-port", "0", "--no-browser", "--duration", "8")  # fmt: skip
    port = int(url_of(demo).split(":")[2].split("/")[0])

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


def test_view_finds_the_command_server_of_dpshm_up(procs, tmp_path):
    """`dpshm up --port 0` and `dpshm view` as a user starts them: no port to pass; the
    token of a protected command server with --supervisor-token."""
    ns = procs[0]
    cfg = tmp_path / "dpshm.toml"
    cfg.write_text('[server]\ntoken = "tk-cli"\n')
    sup = supervise(procs, f"{ns}_nothing", port=True, args=("--config", str(cfg)))
    cmd_port = sup.port()
    view = start(procs, "view", "--port", "0", "--no-browser", "--supervisor-token", "tk-cli")
    port = int(url_of(view).split(":")[2].split("/")[0])

    def workers():
        status, _, body = get(port, "/api/workers")
        w = json.loads(body) if status == 200 else {}
        return w if w.get("enabled") and w.get("error") is None else None

    w = wait_until(workers, 20)
    assert w["server"] == f"127.0.0.1:{cmd_port}" and w["workers"] == []
