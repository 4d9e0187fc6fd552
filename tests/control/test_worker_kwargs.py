"""Worker kwargs abuse: a client sets only what a worker declares, within bounds,
and a worker cannot take a name another stream holds.

Driven over a real TCP command server with the shipped example declarations
(examples/workers.toml); the end-to-end test runs `dpshm up` with real LSL
outlets and checks that consumers never meet AmbiguousStreamError because of
a worker, also after it stopped and was started again.
"""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest
from helpers import ROOT, TESTS, wait_until
from worker_targets import Client, make_spec

from dpshm.config import load_config, worker_source_id
from dpshm.control.commands import Frontend, SupervisorServer
from dpshm.control.workers import WorkerManager
from dpshm.errors import ConfigError, WorkerError

EXAMPLES = ROOT / "examples"
SHIPPED = load_config(EXAMPLES / "workers.toml").workers


@pytest.fixture
def served():
    """The shipped bandpower/epochs declarations + a declared idle worker, over TCP;
    one stream named MockEEG exists (from an amplifier, not a worker)."""
    idle = make_spec(
        "idle",
        "worker_targets:wait_for_stop",
        "thread",
        kwargs={"max_s": 30},
        params={
            "max_s": {"type": "float", "min": 0.1, "max": 60.0},
            "n": {"type": "int", "min": 1, "max": 10},
            "label": {"type": "str", "max_len": 8, "choices": ["a", "b"]},
            "flag": {"type": "bool"},
        },
    )
    specs = {"idle": idle, **SHIPPED}
    manager = WorkerManager(
        specs,
        resolve=lambda s: s,
        search_path=str(TESTS),
        stream_names=lambda: [("MockEEG", "amp-1")],
        namespace="kw",
    )
    server = SupervisorServer(Frontend(manager, lambda: []), 0)
    server.init_server()
    th = threading.Thread(target=server.start_listening, daemon=True)
    th.start()
    c = Client(server.port)
    yield c, manager
    c.close()
    server.shutdown()
    th.join(10)
    manager.close()


def _start(c: Client, worker: str, kwargs: dict, streams=()) -> str:
    return c.ask(
        "START_WORKER|" + json.dumps({"worker": worker, "streams": list(streams), "kwargs": kwargs})
    )


ABUSE = [
    ("bandpower", {"period_s": 1e-6}, "ERROR bandpower: kwargs 'period_s' must be within 0.02..10"),
    ("bandpower", {"period_s": float("nan")}, "'period_s' must be float 0.02..10, got nan"),
    ("bandpower", {"period_s": "0.1"}, "'period_s' must be float 0.02..10, got '0.1'"),
    ("bandpower", {"period_s": True}, "'period_s' must be float 0.02..10, got True"),
    ("bandpower", {"window_s": 1e9}, "'window_s' must be within 0.05..10, got 1000000000.0"),
    ("bandpower", {"band": [8]}, "'band' must have 2..2 items, got 1"),
    ("bandpower", {"band": ["a", "b"]}, "'band'[0] must be list of 2..2 float 0.1..1000"),
    ("bandpower", {"outlet": "a b"}, "'outlet' must be a stream name of 1-64"),
    ("bandpower", {"outlet": "MockEEG"}, "cannot publish outlet='MockEEG': that name is held"),
    ("bandpower", {"target": "os:system"}, "does not let a client set ['target']"),
    ("epochs", {"out": "/etc/cron.d/x"}, "'out' must be a bare file name"),
    ("epochs", {"out": "../../x.npz"}, "'out' must be a bare file name"),
    ("epochs", {"out": ".bashrc"}, "'out' must be a bare file name"),
    ("epochs", {"out_dir": "/tmp"}, "does not let a client set ['out_dir']"),
    ("epochs", {"max_epochs": 10**9}, "'max_epochs' must be within 1..100000"),
    ("epochs", {"max_epochs": 2.5}, "'max_epochs' must be int 1..100000, got 2.5"),
    ("idle", {"label": "c"}, "'label' must be one of ['a', 'b'], got 'c'"),
    ("idle", {"label": "a\nb"}, "contains control characters"),
    ("idle", {"flag": 1}, "'flag' must be true or false, got 1"),
]


@pytest.mark.parametrize(("worker", "kwargs", "expected"), ABUSE, ids=lambda v: str(v)[:24])
def test_abusive_kwargs_are_refused_and_nothing_starts(served, worker, kwargs, expected):
    c, manager = served
    reply = c.ask("START_WORKER|" + json.dumps({"worker": worker, "kwargs": kwargs}))
    assert reply.startswith("ERROR ") and expected in reply, reply
    assert manager.status() == []
    c.send("UP")
    assert c.raw() == "1"  # still serving


def test_declared_kwargs_pass_typed(served):
    c, manager = served
    wid = _start(c, "idle", {"n": 3, "label": "b", "flag": False, "max_s": 5})
    assert wid == "idle-1"
    st = manager.get(wid)
    assert st["kwargs"] == {"max_s": 5.0, "n": 3, "label": "b", "flag": False}
    listed = c.ask_json("LIST_WORKERS")["declared"]
    assert listed["bandpower"]["params"]["period_s"] == {"type": "float", "min": 0.02, "max": 10.0}
    assert listed["epochs"]["params"]["out"] == {"type": "filename"}
    manager.stop(wid)


def test_a_worker_without_params_takes_no_kwargs():
    m = WorkerManager({"w": make_spec("w", "worker_targets:wait_for_stop")})
    try:
        with pytest.raises(
            ValueError, match=r"does not let a client set \['x'\]; settable: nothing"
        ):
            m.start("w", kwargs={"x": 1})
        assert m.status() == []
    finally:
        m.close()


def test_declared_defaults_obey_their_declaration(tmp_path):
    cfg = tmp_path / "w.toml"
    cfg.write_text(
        '[workers.bp]\ntarget = "m:f"\nkwargs = { period_s = 1e-6 }\n'
        '[workers.bp.params]\nperiod_s = { type = "float", min = 0.02, max = 10.0 }\n'
    )
    with pytest.raises(ConfigError, match=r"line 3: 'workers.bp.kwargs.period_s' must be within"):
        load_config(cfg)
    cfg.write_text('[workers.bp]\ntarget = "m:f"\n[workers.bp.params]\nx = { type = "float" }\n')
    with pytest.raises(ConfigError, match="needs both 'min' and 'max'"):
        load_config(cfg)


def test_two_running_workers_cannot_share_an_outlet_name():
    spec = dataclasses.replace(SHIPPED["bandpower"], target="worker_targets:wait_for_stop")
    m = WorkerManager({"bp": spec, "bp2": dataclasses.replace(spec, name="bp2")},
                      search_path=str(TESTS))  # fmt: skip
    try:
        first = m.start("bp", kwargs={"outlet": "power"})
        with pytest.raises(WorkerError, match=f"held by 'worker {first}'"):
            m.start("bp2", kwargs={"outlet": "power"})
        m.stop(first)
        assert m.start("bp2", kwargs={"outlet": "power"}) == "bp2-2"
    finally:
        m.close()


# -- end to end: `dpshm up` with the shipped config and real LSL outlets ----------------------


@pytest.mark.lsl
def test_worker_never_makes_a_stream_name_ambiguous(procs, unique_name, tmp_path):
    from supervisor_util import Sup

    from dpshm.mock import MockOutlets, MockSpec
    from dpshm.shm.view import SharedStreamView

    ns, started = procs
    spec = MockSpec(name=f"{unique_name}_eeg", channels=4, rate=200.0,
                    marker_name=f"{unique_name}_mk")  # fmt: skip
    eeg, bp = spec.name, f"{unique_name}_bp"
    with MockOutlets(spec):
        args = ("--config", str(EXAMPLES / "workers.toml"), "--port", "0")
        sup = Sup(ns, eeg, bp, args=args, cwd=tmp_path)
        started.append(sup)
        proc, port = sup.proc, sup.port(30)
        c = Client(port)
        wait_until(lambda: any(s["name"] == eeg for s in c.ask_json("LIST_STREAMS")), 30)
        # the amplifier's name is refused
        taken = _start(c, "bandpower", {"outlet": eeg, "period_s": 0.05}, [eeg])
        assert taken.startswith("ERROR worker 'bandpower' cannot publish outlet=")
        # a free name works; stopped and started again it continues its own stream
        for n in (1, 2):
            wid = _start(c, "bandpower", {"outlet": bp, "period_s": 0.05}, [eeg])
            assert wid == f"bandpower-{n}", wid

            def shared_and_flowing():
                return [s for s in c.ask_json("LIST_STREAMS")
                        if s["name"] == bp and not s["stale"] and s["head"] > 0]  # fmt: skip

            wait_until(shared_and_flowing, 30)
            with SharedStreamView(bp, namespace=ns) as v:  # never AmbiguousStreamError
                assert v.wait(5.0)
            c.ask("STOP_WORKER|" + json.dumps({"id": wid}))
        listed = [s for s in c.ask_json("LIST_STREAMS") if s["name"] == bp]
        assert len(listed) == 1, listed
        status = {s["name"]: s for s in c.ask_json("STATUS")["streams"]}
        assert status[bp]["source_id"] == worker_source_id(ns, "bandpower")
        with SharedStreamView(bp, namespace=ns) as v:  # after it stopped, too
            assert v.stale or v.head > 0
        c.send("CLOSE")
        assert proc.wait(20) == 0
        c.close()
