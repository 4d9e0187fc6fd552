"""The supervisor's TCP commands on a real DefaultServer, driven like a control room."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
from helpers import TESTS, wait_until
from worker_targets import READER_PARAMS, Client, collect_logs, make_spec

from dpshm.control.commands import Frontend, SupervisorServer
from dpshm.control.workers import WorkerManager
from dpshm.errors import ConfigError, StreamNotFoundError
from dpshm.shm.ring import SharedRing


@pytest.fixture
def rings(unique_name):
    eeg = SharedRing.create(f"{unique_name}_eeg", 4, 500, "float32", srate=100.0)
    mk = SharedRing.create(f"{unique_name}_mk", 1, 32, "string")
    eeg.write(np.ones((120, 4), np.float32), np.arange(120) / 100.0)
    yield {"eeg": eeg, "markers": mk}
    for r in (eeg, mk):
        r.close()
        r.unlink()


@pytest.fixture
def served(rings):
    """Workers + frontend + a real server on an OS-chosen port, serving in a thread."""
    specs = [
        make_spec(
            "idle_t",
            "worker_targets:wait_for_stop",
            "thread",
            kwargs={"x": 1},
            params={"y": {"type": "int", "min": 0, "max": 9}},
        ),
        make_spec("idle_p", "worker_targets:wait_for_stop", "process"),
        make_spec("reader", "worker_targets:read_windows", "process", params=READER_PARAMS),
    ]

    def resolve(stream):
        if stream not in rings:
            raise StreamNotFoundError(f"no stream {stream!r}; known streams: {sorted(rings)}")
        return rings[stream].name

    def streams_status():
        return [
            {"name": n, "type": "EEG" if n == "eeg" else "Markers", "channels": r.n_channels,
             "srate": r.srate, "head": r.head, "stale": r.stale, "ring": r.name}
            for n, r in rings.items()
        ]  # fmt: skip

    manager = WorkerManager(
        {s.name: s for s in specs}, resolve=resolve, search_path=str(TESTS), grace_s=1.0
    )
    closed = threading.Event()
    server = SupervisorServer(
        Frontend(manager, streams_status, lambda: {"pid": 1234, "namespace": "test"}),
        0,
        on_close=closed.set,
    )
    server.init_server()
    th = threading.Thread(target=server.start_listening, name="test-server", daemon=True)
    th.start()
    yield server, manager, closed, th
    server.shutdown()
    th.join(10)
    manager.close()


def _worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("dpshm-worker-")]


def test_control_room_session(served, rings, tmp_path):
    server, manager, closed, th = served
    c = Client(server.port)
    assert c.banner == "Connected to dpshm"
    c.send("GET_PCOMMS")
    pcomms = c.raw(10).split("|")
    assert {"LIST_STREAMS", "STATUS", "START_WORKER", "STOP_WORKER", "LIST_WORKERS"} <= set(
        pcomms
    ) and {"STOP", "CLOSE", "GET_PCOMMS", "UP"} <= set(pcomms)

    streams = c.ask_json("LIST_STREAMS")
    eeg = next(s for s in streams if s["name"] == "eeg")
    assert eeg == {"name": "eeg", "type": "EEG", "channels": 4, "rate": 100.0, "head": 120,
                   "stale": False}  # fmt: skip

    t_id = c.ask('START_WORKER|{"worker": "idle_t", "streams": ["eeg"], "kwargs": {"y": 2}}')
    p_id = c.ask('START_WORKER|{"worker": "idle_p", "streams": ["eeg", "markers"]}')
    out = tmp_path / "r.json"
    r_args = {"n": 100, "head": 120, "out": str(out), "linger_s": 60}
    r_id = c.ask(
        "START_WORKER|" + json.dumps({"worker": "reader", "streams": ["eeg"], "kwargs": r_args})
    )
    assert (t_id, p_id, r_id) == ("idle_t-1", "idle_p-2", "reader-3")

    listed = c.ask_json("LIST_WORKERS")
    assert set(listed["declared"]) == {"idle_t", "idle_p", "reader"}
    assert listed["declared"]["idle_p"]["mode"] == "process"
    by_id = {w["id"]: w for w in listed["workers"]}
    assert by_id[t_id]["kwargs"] == {"x": 1, "y": 2}
    assert by_id[p_id]["streams"] == ["eeg", "markers"]

    def all_running():
        status = c.ask_json("STATUS")
        return all(w["state"] == "running" for w in status["workers"]) and status

    status = wait_until(all_running, timeout=20)
    assert status["supervisor"] == {"pid": 1234, "namespace": "test"}
    assert {s["name"] for s in status["streams"]} == {"eeg", "markers"}
    assert {w["id"]: w["state"] for w in status["workers"]} == {
        t_id: "running",
        p_id: "running",
        r_id: "running",
    }
    wait_until(out.exists, timeout=20)
    assert json.loads(out.read_text())["eeg"]["head"] == 120
    pids = [by_id[p_id]["pid"], by_id[r_id]["pid"]]

    stopped = c.ask_json("STOP_WORKER|" + json.dumps({"id": p_id}))
    assert stopped["id"] == p_id and stopped["state"] == "stopped"

    c.send("STOP")
    c.send("UP")
    assert c.raw(1) == "1"
    states = {w["id"]: w["state"] for w in c.ask_json("STATUS")["workers"]}
    assert states == {t_id: "stopped", p_id: "stopped", r_id: "stopped"}
    assert not _worker_threads()
    assert not any(psutil.pid_exists(p) for p in pids)

    # workers can be started again after STOP; CLOSE then stops them and the supervisor
    again = c.ask('START_WORKER|{"worker": "idle_p"}')
    again_pid = manager.get(again)["pid"]
    c.send("CLOSE")
    assert closed.wait(10)
    th.join(10)
    assert not th.is_alive()
    assert manager.get(again)["state"] == "stopped"
    assert not psutil.pid_exists(again_pid)
    assert not _worker_threads()
    c.close()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ('START_WORKER|{"worker": "nope"}', "unknown worker 'nope'"),
        ('START_WORKER|{"worker": "os:system"}', "looks like a target string"),
        ('START_WORKER|{"worker": "idle_t", "target": "os:system"}', "never a target"),
        ('START_WORKER|{"worker": "idle_t", "streams": ["ghost"]}', "no stream 'ghost'"),
        ('START_WORKER|{"worker": "idle_t", "streams": "eeg", "kwargs": [1]}', '"kwargs" must'),
        ('START_WORKER|{"worker": 5}', 'needs "worker"'),
        ('START_WORKER|{"worker": "idle_t"', "bad JSON payload"),
        ('STOP_WORKER|{"id": "idle_t-99"}', "unknown worker id 'idle_t-99'"),
        ("STOP_WORKER|", 'STOP_WORKER needs {"id": ID}'),
        ("LAUNCH|{}", "unknown PCOMM 'LAUNCH'"),
    ],
)
def test_refusals_name_the_problem_and_serving_goes_on(served, command, expected):
    server, manager, _closed, _th = served
    c, other = Client(server.port), Client(server.port)
    reply = c.ask(command)
    assert reply.startswith("ERROR") and expected in reply, reply
    assert not manager.status()  # nothing was started
    # the same and another connection keep working
    assert c.ask_json("LIST_STREAMS")
    assert other.ask_json("LIST_WORKERS")["workers"] == []
    c.close()
    other.close()


def test_non_loopback_bind_needs_token(served):
    server, _manager, _closed, _th = served
    frontend = server.frontend
    with pytest.raises(ConfigError, match=r"'0.0.0.0' without a token.*\[server\] token"):
        SupervisorServer(frontend, 0, "0.0.0.0")
    with SupervisorServer(frontend, 0, "0.0.0.0", token="s3cret") as guarded:
        guarded.init_server()
        th = threading.Thread(target=guarded.start_listening, daemon=True)
        th.start()
        c = Client(guarded.port)
        assert c.ask("STATUS").startswith("ERROR not authenticated")
        assert c.ask("AUTH|s3cret") == "OK"
        assert c.ask_json("STATUS")["workers"] == []
        c.close()
    th.join(10)
    assert not th.is_alive()


class _SupervisorStandIn:
    """The calls SupervisorFrontend needs from a supervisor, over real rings."""

    def __init__(self, rings):
        self.rings = rings
        self.stopped = threading.Event()
        self.endpoints = {}

    def add_endpoints(self, endpoints):
        self.endpoints.update(endpoints)

    def status(self):
        streams = {
            r.name: {"name": n, "type": "EEG", "source_id": f"{n}-sid", "ring": r.name,
                     "channels": r.n_channels, "srate": r.srate, "head": r.head, "stale": False}
            for n, r in self.rings.items()
        }  # fmt: skip
        return {"namespace": "x", "pid": 42, "streams": streams}

    def stop(self):
        self.stopped.set()


def test_supervisor_frontend_worker_logs_reach_a_dareplane_log_server(rings, tmp_path, unique_name):
    from dpshm.config import parse_toml
    from dpshm.control.commands import SupervisorFrontend
    from dpshm.dareplane.logserver import LogRecordSocketReceiver

    received: list[logging.LogRecord] = []
    rcv = LogRecordSocketReceiver(
        "127.0.0.1", 0, logfile=tmp_path / "all.log", console=False, record_callback=received.append
    )
    rcv_thread = threading.Thread(target=rcv.serve_until_stopped, daemon=True)
    rcv_thread.start()
    cfg = parse_toml(
        f'[supervisor]\nnamespace = "{unique_name}"\n[server]\nport = 0\n'
        '[workers.idle]\ntarget = "worker_targets:wait_for_stop"\nmode = "process"\n',
        source=str(tmp_path / "dpshm.toml"),
    )
    sup = _SupervisorStandIn(rings)
    try:
        with (
            collect_logs(level=logging.INFO),
            SupervisorFrontend(sup, cfg, log_port=rcv.port) as fe,
        ):
            c = Client(fe.port)
            assert c.ask_json("STATUS")["supervisor"]["port"] == fe.port
            # where `dpshm view` finds the command server (the registry's endpoints)
            assert sup.endpoints == {"commands": f"tcp://127.0.0.1:{fe.port}",
                                     "commands_auth": "none"}  # fmt: skip
            wid = c.ask('START_WORKER|{"worker": "idle", "streams": ["eeg"]}')
            assert c.ask('START_WORKER|{"worker": "idle", "streams": ["nope"]}').startswith(
                "ERROR no stream 'nope' in this supervisor; known streams: [\"eeg (type 'EEG', "
            )

            def got():
                return [r for r in received if r.name == f"dpshm.worker.{wid}"]

            (rec,) = wait_until(got, timeout=20)
            assert "up in pid" in rec.getMessage()
            c.send("CLOSE")
            assert sup.stopped.wait(10)
            c.close()
        assert fe.manager.get(wid)["state"] == "stopped"
        assert sup.endpoints == {"commands": "", "commands_auth": ""}  # closed: withdrawn
    finally:
        rcv.close()
        rcv_thread.join(5)


def test_json_replies_are_strict_json():
    from dpshm.control.commands import to_json_line

    line = to_json_line({"rate": float("nan"), "lag": [float("inf"), 1.5], "p": Path("/x")})
    assert json.loads(line) == {"rate": None, "lag": [None, 1.5], "p": "/x"}
    assert "\n" not in line


def test_positional_start_for_old_clients(served):
    server, manager, _closed, _th = served
    c = Client(server.port)
    wid = c.ask("START_WORKER|idle_t|")  # the 0.0.21 positional form, no streams
    assert wid == "idle_t-1" and manager.get(wid)["kwargs"] == {"x": 1}
    assert c.ask("STOP_WORKER|idle_t-1|").startswith('{"id":"idle_t-1"')
    c.close()
