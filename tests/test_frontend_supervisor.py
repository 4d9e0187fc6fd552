"""End to end: `dpshm up` with workers, driven over TCP like a control room."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
from helpers import wait_until

pylsl = pytest.importorskip("pylsl")

from dpshm.view import SharedStreamView  # noqa: E402
from worker_targets import Client  # noqa: E402

TESTS = Path(__file__).parent
ROOT = TESTS.parent
N_SAMPLES = 600

pytestmark = [pytest.mark.lsl]


@pytest.fixture
def outlet(unique_name):
    """A 4 ch 100 Hz outlet that pushes N_SAMPLES known samples, then holds still."""
    info = pylsl.StreamInfo(unique_name, "EEG", 4, 100.0, "float32", f"{unique_name}-sid")
    out = pylsl.StreamOutlet(info)
    stop = threading.Event()

    def push_when_consumed():
        while not stop.is_set() and not out.wait_for_consumers(0.1):
            pass
        rows = np.arange(N_SAMPLES, dtype=np.float32)[:, None] * 10 + np.arange(4)
        for i in range(0, N_SAMPLES, 50):
            if stop.is_set():
                return
            out.push_chunk(rows[i : i + 50])
            stop.wait(0.02)

    th = threading.Thread(target=push_when_consumed, daemon=True)
    th.start()
    yield unique_name
    stop.set()
    th.join(5)


def _start_supervisor(tmp_path, stream, extra_toml=""):
    ns = f"t{os.getpid()}{tmp_path.name[-6:]}".replace("_", "")[:30]
    cfg = tmp_path / "dpshm.toml"
    cfg.write_text(
        f"""
[[streams]]
name = "{stream}"

[server]
port = 1  # overridden by --port 0 (any free port)

[workers.idle_t]
target = "worker_targets:wait_for_stop"
mode = "thread"

[workers.reader]
target = "worker_targets:read_windows"
mode = "process"
{extra_toml}
"""
    )
    env = {
        **os.environ,
        "DPSHM_NAMESPACE": ns,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "dpshm", "up", "--config", str(cfg), "--quiet", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    port = None
    lines = []
    for line in proc.stdout:  # the CLI prints where it serves its commands
        lines.append(line)
        m = re.search(r"commands on 127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        proc.kill()
        proc.wait(10)
        raise AssertionError("dpshm up did not report its port:\n" + "".join(lines))
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining
    return proc, port, ns


def test_control_room_drives_dpshm_up(outlet, tmp_path):
    proc, port, ns = _start_supervisor(tmp_path, outlet)
    try:
        c = Client(port)
        assert c.banner == "Connected to dpshm"

        def stream_complete():
            streams = c.ask_json("LIST_STREAMS")
            return [s for s in streams if s["name"] == outlet and s["head"] >= N_SAMPLES]

        (listed,) = wait_until(stream_complete, timeout=30)
        assert listed == {"name": outlet, "type": "EEG", "channels": 4, "rate": 100.0,
                          "head": N_SAMPLES, "stale": False}  # fmt: skip

        out = tmp_path / "window.json"
        kwargs = {"n": 200, "head": N_SAMPLES, "out": str(out), "linger_s": 60}
        t_id = c.ask(f'START_WORKER|{{"worker": "idle_t", "streams": ["{outlet}"]}}')
        r_id = c.ask(
            "START_WORKER|"
            + json.dumps({"worker": "reader", "streams": [outlet], "kwargs": kwargs})
        )
        assert (t_id, r_id) == ("idle_t-1", "reader-2")
        wait_until(out.exists, timeout=30)
        got = json.loads(out.read_text())[outlet]

        # the process worker read exactly what a view in this process reads
        with SharedStreamView(outlet, namespace=ns) as here:
            data, ts = here.get_window(n_samples=200, copy=True)
        np.testing.assert_array_equal(np.asarray(got["data"], np.float32), data)
        np.testing.assert_array_equal(np.asarray(got["ts"]), ts)
        np.testing.assert_array_equal(data[-1], [5990, 5991, 5992, 5993])

        # ... from shared memory: no LSL inlet in the worker (pylsl not even imported)
        facts = json.loads(out.read_text())
        assert facts["pylsl_loaded"] is False
        worker = psutil.Process(facts["pid"])
        assert worker.net_connections(kind="inet") == []
        assert worker.ppid() == proc.pid

        status = c.ask_json("STATUS")
        assert status["supervisor"]["port"] == port
        assert {w["id"]: w["state"] for w in status["workers"]} == {
            t_id: "running",
            r_id: "running",
        }
        assert any(s["name"] == outlet for s in status["streams"])

        # refusals keep the supervisor serving
        assert c.ask('START_WORKER|{"worker": "worker_targets:fail"}').startswith(
            "ERROR unknown worker"
        )
        assert c.ask('START_WORKER|{"worker": "idle_t", "streams": ["nope"]}').startswith(
            "ERROR no stream 'nope'"
        )

        c.send("STOP")
        states = wait_until(
            lambda: {w["id"]: w["state"] for w in c.ask_json("LIST_WORKERS")["workers"]}
        )
        assert states == {t_id: "stopped", r_id: "stopped"}
        assert not psutil.pid_exists(facts["pid"])

        b_args = {"n": 1, "head": 0, "out": str(tmp_path / "b"), "linger_s": 60}
        again = c.ask("START_WORKER|" + json.dumps({"worker": "reader", "kwargs": b_args}))
        assert again == "reader-3"
        wait_until((tmp_path / "b").exists, timeout=30)
        children = psutil.Process(proc.pid).children(recursive=True)
        c.send("CLOSE")
        assert proc.wait(20) == 0
        _gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"left running after CLOSE: {alive}"
        c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_non_loopback_without_token_refused(outlet, tmp_path):
    cfg = tmp_path / "open.toml"
    cfg.write_text('[server]\nhost = "0.0.0.0"\nport = 0\n')
    env = {**os.environ, "DPSHM_NAMESPACE": f"r{os.getpid()}", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "dpshm", "up", "--config", str(cfg), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "'0.0.0.0' without a token" in res.stderr + res.stdout
