"""End to end: `dpshm up` with workers, driven over TCP like a control room."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import psutil
import pylsl
import pytest
from helpers import ROOT, wait_until
from supervisor_util import Sup, stop_all
from worker_targets import Client

from dpshm.shm.view import SharedStreamView

# until the supervisor (issue 5) is merged, there is no `dpshm up` to drive
pytest.importorskip("dpshm.shm.supervisor", reason="the supervisor is not merged yet")


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


def _namespace(tmp_path):
    return f"t{os.getpid()}{tmp_path.name[-6:]}".replace("_", "")[:30]


def _write_config(tmp_path, stream):
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

[workers.reader.params]
n = {{ type = "int", min = 1, max = 100000 }}
head = {{ type = "int", min = 0, max = 1000000000 }}
out = {{ type = "str", max_len = 4096 }}
linger_s = {{ type = "float", min = 0.0, max = 120.0 }}
"""
    )
    return cfg


@contextlib.contextmanager
def _supervisor(cfg, ns, *args, cwd=None):
    """`dpshm up --config cfg --port 0 ARGS` (in ``cwd``); yields (its process, its port).

    On the way out, also when the test failed, the supervisor is stopped and what
    it left on ``ns`` (rings, registry) is removed.
    """
    sup = Sup(ns, args=("--config", str(cfg), "--port", "0", *args), cwd=cwd)
    try:
        yield sup.proc, sup.port()
    finally:
        stop_all(ns, [sup])


def test_control_room_drives_dpshm_up(outlet, tmp_path):
    ns = _namespace(tmp_path)
    with _supervisor(_write_config(tmp_path, outlet), ns) as (proc, port):
        c = Client(port)
        assert c.banner == "Connected to dpshm"

        def stream_complete():
            streams = c.ask_json("LIST_STREAMS")
            return [s for s in streams if s["name"] == outlet and s["head"] >= N_SAMPLES]

        (listed,) = wait_until(stream_complete, timeout=30)
        # the supervisor's ZeroMQ log stream, as `dpshm logs` follows it
        from dpshm.shm import registry
        from dpshm.shm.bus import LogSubscriber

        logs = LogSubscriber(registry.read_registry(ns).endpoints["logs"])
        records: list[dict] = []

        def worker_logged():
            records.extend(logs.recv(0.1))
            return [r for r in records if r.get("name") == "dpshm.worker.reader-2"]

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
        # the process worker's ctx.logger reached the supervisor's log stream
        (rec,) = wait_until(worker_logged, timeout=10)
        assert rec["msg"] == "reader reader-2 wrote its windows"
        assert rec["process"] == facts["pid"]
        logs.close()
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


def test_non_loopback_without_token_refused(outlet, tmp_path):
    cfg = tmp_path / "open.toml"
    cfg.write_text('[server]\nhost = "0.0.0.0"\nport = 0\n')
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
    env = {**os.environ, "DPSHM_NAMESPACE": f"r{os.getpid()}", "PYTHONPATH": path}
    res = subprocess.run(
        [sys.executable, "-m", "dpshm", "up", "--config", str(cfg), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "'0.0.0.0' without a token" in res.stderr + res.stdout


def test_examples_run_against_mock(unique_name, tmp_path):
    from dpshm.mock import MockOutlets, MockSpec

    spec = MockSpec(
        name=f"{unique_name}_eeg",
        channels=64,
        rate=1000.0,
        marker_name=f"{unique_name}_mk",
        marker_every_s=0.25,
    )
    eeg, mk, bp_name = spec.name, spec.marker_name, f"{unique_name}_bp"
    with MockOutlets(spec):
        cfg = ROOT / "examples" / "workers.toml"
        with _supervisor(
            cfg, _namespace(tmp_path), "--stream", eeg, "--stream", mk, cwd=tmp_path
        ) as (proc, port):
            c = Client(port)

            def both_flowing():
                heads = {s["name"]: s["head"] for s in c.ask_json("LIST_STREAMS")}
                return heads.get(eeg, 0) > 1000 and heads.get(mk, 0) > 0

            wait_until(both_flowing, timeout=30)
            bp_args = {"worker": "bandpower", "streams": [eeg], "kwargs": {"outlet": bp_name}}
            bp = c.ask("START_WORKER|" + json.dumps(bp_args))
            out = tmp_path / "epochs" / "ep.npz"  # out_dir "epochs" of the supervisor's cwd
            ep_kwargs = {"max_epochs": 2, "out": "ep.npz"}
            ep_args = {"worker": "epochs", "streams": [eeg, mk], "kwargs": ep_kwargs}
            ep = c.ask("START_WORKER|" + json.dumps(ep_args))
            assert (bp, ep) == ("bandpower-1", "epochs-2")
            found = pylsl.resolve_byprop("name", bp_name, 1, 10.0)
            assert found, "the band-power worker's outlet did not appear"
            inlet = pylsl.StreamInlet(found[0])
            try:
                power, _ = inlet.pull_sample(timeout=10.0)
            finally:
                inlet.close_stream()
            # mock channel c is a sine of (c % 10) + 5 Hz: channel 5 (10 Hz) is in 8-12 Hz
            assert len(power) == 64 and power[5] > 10 * power[0]

            def epochs_done():
                ws = {w["id"]: w for w in c.ask_json("STATUS")["workers"]}
                return ws[ep]["state"] in ("finished", "failed") and ws[ep]

            st = wait_until(epochs_done, timeout=30)
            assert st["state"] == "finished", st["error"]
            got = np.load(out)
            n_ep, n_samples, n_ch = got["epochs"].shape  # 0.7 s at 1 kHz, whatever the jitter
            assert (n_ep, n_samples, n_ch) == (2, 700, 64)
            assert set(got["labels"]) <= {"trial_start", "stimulus", "response"}
            c.send("CLOSE")
            assert proc.wait(20) == 0
            c.close()


def test_busy_port_refused_with_the_fix(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
        env = {**os.environ, "DPSHM_NAMESPACE": f"b{os.getpid()}", "PYTHONPATH": path}
        port = str(busy.getsockname()[1])
        res = subprocess.run(
            [sys.executable, "-m", "dpshm", "up", "--quiet", "--stream", "none", "--port", port],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        busy.close()
    assert res.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert "choose another --port" in res.stderr
