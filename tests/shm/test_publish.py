"""Published streams: a producer process -> supervisor registry -> reader processes.

Real processes throughout: ``dpshm up`` as a subprocess, the producer and the
readers as other subprocesses, the rings in /dev/shm.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, wait_until
from supervisor_util import READER, Proc, Sup, child_env, segments

import dpshm
from dpshm.errors import StreamNameTakenError, SupervisorNotRunningError
from dpshm.shm import registry
from dpshm.shm.view import SharedStreamView

N_CH, RATE, N, CHUNK = 3, 1000.0, 3000, 25

# publishes a ramp once the file argv[2] exists: channel c of sample i = i * (c + 1),
# stamped t0 + i / rate with t0 = 1000.0
PRODUCER = r"""
import os, sys, time
import numpy as np
import dpshm
name, go = sys.argv[1], sys.argv[2]
n, n_ch, rate, chunk = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
labels = [f"r{c}" for c in range(n_ch)]
with dpshm.publish_stream(name, n_ch, rate, type="Ramp", channel_names=labels) as pub:
    print("published", pub.key, os.getpid(), flush=True)
    end = time.monotonic() + 30
    while not os.path.exists(go) and time.monotonic() < end:
        time.sleep(0.01)
    for a in range(0, n, chunk):
        idx = np.arange(a, min(a + chunk, n))
        pub.push_chunk(idx[:, None] * (np.arange(n_ch) + 1.0), 1000.0 + idx / rate)
        time.sleep(chunk / rate)
    print("pushed", pub.head, flush=True)
    end = time.monotonic() + 30
    while not os.path.exists(go + ".end") and time.monotonic() < end:
        time.sleep(0.01)
print("closed", flush=True)
"""


def _ramp(n: int, n_ch: int) -> np.ndarray:
    return (np.arange(n)[:, None] * (np.arange(n_ch) + 1.0)).astype(np.float32)


def test_publish_without_supervisor_fails_like_a_view(unique_name, monkeypatch):
    monkeypatch.setenv("DPSHM_NAMESPACE", unique_name)
    with pytest.raises(SupervisorNotRunningError, match="dpshm up") as info:
        dpshm.publish_stream(f"{unique_name}-x", 2, 100.0)
    assert f"{unique_name}-x" in str(info.value) and unique_name in str(info.value)
    with pytest.raises(SupervisorNotRunningError, match="dpshm up"):
        SharedStreamView(f"{unique_name}-x")


def test_ramp_from_a_producer_process_to_two_readers(procs, tmp_path):
    ns, started = procs
    name = f"{ns}-ramp"
    sup = Sup(ns, f"{ns}-no-lsl")  # selects no LSL stream of other tests
    started.append(sup)
    sup.ready()
    go = tmp_path / "go"
    prod = Proc(ns, ["-c", PRODUCER, name, str(go), str(N), str(N_CH), str(RATE), str(CHUNK)])
    started.append(prod)
    prod.saw("published", 20)
    pid = prod.proc.pid
    entry = sup.entry(name)
    assert entry.producer_pid == pid and entry.type == "Ramp" and not entry.stale
    assert entry.channels == N_CH and entry.srate == RATE and entry.format == "float32"
    assert set(entry.endpoints) >= {"heads"}  # the producer's own wake-ups

    # a second publisher of the same name is refused; the name is held by pid
    with pytest.raises(StreamNameTakenError, match=f"pid {pid}"):
        dpshm.publish_stream(name, N_CH, RATE, source_id="another-source")

    readers = [  # one wakes on the producer's doorbell, the other on its ZeroMQ head updates
        Proc(ns, ["-c", READER, name, str(N), str(tmp_path / f"r{i}.npz"), wake])
        for i, wake in enumerate(("doorbell", "zmq"))
    ]
    started.extend(readers)
    for r in readers:
        assert f"ready {pid}" in r.saw("ready", 20)  # the ring's writer is the producer
    tail = Proc(ns, ["-m", "dpshm", "tail", name, "--duration", "30"])
    started.append(tail)
    tail.saw(f"published by pid {pid}", 20)
    go.touch()
    prod.saw("pushed", 30)
    for r in readers:
        r.saw("done", 30)
        assert r.finish() == 0, r.output
    for i in range(2):
        res = np.load(tmp_path / f"r{i}.npz")
        assert int(res["lost"]) == 0
        np.testing.assert_array_equal(res["data"], _ramp(N, N_CH))  # every value, in order
        np.testing.assert_array_equal(res["ts"], 1000.0 + np.arange(N) / RATE)
    tail.saw(f"{(N - 1) * N_CH}.", 10)  # the newest sample's last channel
    tail.stop()

    ls = subprocess.run(
        [sys.executable, "-m", "dpshm", "ls", "--json"], env=child_env(ns), capture_output=True,
        text=True, timeout=30, cwd=str(ROOT),
    )  # fmt: skip
    assert ls.returncode == 0, ls.stderr
    (s,) = [s for s in json.loads(ls.stdout)["streams"].values() if s["name"] == name]
    assert s["producer_pid"] == pid and s["head"] == N
    ls = subprocess.run(
        [sys.executable, "-m", "dpshm", "ls"], env=child_env(ns), capture_output=True,
        text=True, timeout=30, cwd=str(ROOT),
    )  # fmt: skip
    (line,) = [ln for ln in ls.stdout.splitlines() if ln.startswith(name)]
    assert f"pid {pid}" in line

    # the producer closes: stale for the attached view, its ring unlinked by itself
    with SharedStreamView(name) as view:
        (go.parent / "go.end").touch()
        prod.saw("closed", 20)
        assert prod.finish() == 0, prod.output
        sup.entry(name, lambda e: e.stale)
        assert view.stale and view.head == N
        assert not any(entry.ring in seg for seg in segments(ns))
    assert sup.stop() == 0, sup.output
    assert segments(ns) == [] and registry.read_registry_raw(ns) is None


def test_string_stream_in_process(procs):
    ns, started = procs
    sup = Sup(ns, f"{ns}-no-lsl")
    started.append(sup)
    sup.ready()
    name = f"{ns}-markers"
    with dpshm.publish_stream(name, 1, 0.0, dtype="string", meta={"task": "oddball"}) as pub:
        with SharedStreamView(name) as view:
            assert view.format == "string" and view.srate == 0.0
            assert view.meta["task"] == "oddball" and view.meta["producer"]["name"] == name
            pub.push_sample(["start_trial"], timestamp=5.0)
            pub.push_chunk([["a"], ["b"]])  # default timestamps: now
            assert view.wait(2.0)
            wait_until(lambda: view.head == 3, 2)
            data, ts, lost = view.read_new()
            assert list(data[:, 0]) == ["start_trial", "a", "b"] and lost == 0
            assert ts[0] == 5.0 and ts[1] == ts[2] > 5.0
        with pytest.raises(ValueError, match="shape"):
            pub.push_chunk([["x", "y"]])
    with pytest.raises(ValueError, match="closed"):
        pub.push_chunk([["late"]])
    pub.close()  # idempotent
    with pytest.raises(ValueError, match="meta keys"):
        dpshm.publish_stream(f"{ns}-m2", 1, 0.0, meta={"producer": 1})


def test_loss_counted_for_a_slow_reader(procs):
    ns, started = procs
    sup = Sup(ns, f"{ns}-no-lsl")
    started.append(sup)
    sup.ready()
    name = f"{ns}-fast"
    with dpshm.publish_stream(name, 1, 1000.0, capacity=100) as pub, SharedStreamView(name) as v:
        for a in range(0, 350, 50):
            pub.push_chunk(np.arange(a, a + 50, dtype=np.float32)[:, None])
        data, _, lost = v.read_new()  # it read nothing while 350 were pushed
        assert lost == 250 and v.lost_samples == 250
        np.testing.assert_array_equal(data[:, 0], np.arange(250, 350))
