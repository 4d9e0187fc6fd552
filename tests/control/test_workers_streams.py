"""Workers on real shared-memory rings: zero-copy reads, no LSL inlet, the examples."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from helpers import TESTS, wait_until
from worker_targets import READER_PARAMS, collect_logs, make_spec

from dpshm.config import load_config
from dpshm.control.workers import WorkerManager
from dpshm.shm.ring import SharedRing
from dpshm.shm.view import SharedStreamView

EXAMPLES = TESTS.parent / "examples"


@pytest.fixture
def ring_factory(unique_name):
    rings = []

    def make(suffix, n_channels=4, capacity=1000, dtype="float32", srate=100.0):
        r = SharedRing.create(f"{unique_name}_{suffix}", n_channels, capacity, dtype, srate=srate)
        rings.append(r)
        return r

    yield make
    for r in rings:
        r.close()
        r.unlink()


def _ramp(start, n, n_channels=4):
    i = np.arange(start, start + n, dtype=np.float32)[:, None]
    return i * 10 + np.arange(n_channels, dtype=np.float32)[None, :]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_worker_reads_same_samples_as_a_view_here_without_lsl(mode, ring_factory, tmp_path):
    eeg = ring_factory("eeg")
    eeg.write(_ramp(0, 700), np.arange(700) / 100.0)
    out = tmp_path / "out.json"
    spec = make_spec("reader", "worker_targets:read_windows", mode, params=READER_PARAMS)
    rings = {"eeg": eeg.name}
    with WorkerManager({"reader": spec}, resolve=rings.__getitem__, search_path=str(TESTS)) as m:
        kwargs = {"n": 300, "head": 700, "out": str(out), "linger_s": 30}
        wid = m.start("reader", ["eeg"], kwargs)
        wait_until(out.exists, timeout=20)
        got = json.loads(out.read_text())
        with SharedStreamView(eeg.name) as here:
            data, ts = here.get_window(n_samples=300, copy=True)
        assert got["eeg"]["head"] == 700
        np.testing.assert_array_equal(np.asarray(got["eeg"]["data"], np.float32), data)
        np.testing.assert_array_equal(np.asarray(got["eeg"]["ts"]), ts)
        np.testing.assert_array_equal(data[-1], _ramp(699, 1)[0])
        if mode == "process":
            pid = got["pid"]
            assert pid == m.get(wid)["pid"] != psutil.Process().pid
            # zero-copy from shared memory: no LSL inlet, not even pylsl imported,
            # and no TCP/UDP socket at all in the worker process
            assert got["pylsl_loaded"] is False
            assert psutil.Process(pid).net_connections(kind="inet") == []
            maps = {Path(mm.path).name for mm in psutil.Process(pid).memory_maps()}
            assert any(name.startswith("dpshm_") and eeg.name in name for name in maps)
        assert m.stop(wid)["state"] == "stopped"


def test_unknown_stream_refused(ring_factory):
    spec = make_spec("reader", "worker_targets:wait_for_stop", "thread")

    def resolve(stream):
        raise LookupError(f"no stream {stream!r}; known: ['eeg']")

    with (
        WorkerManager({"reader": spec}, resolve=resolve, search_path=str(TESTS)) as m,
        pytest.raises(LookupError, match="no stream 'nope'"),
    ):
        m.start("reader", ["nope"])


def test_missing_ring_in_process_worker_is_reported(unique_name):
    spec = make_spec("reader", "worker_targets:wait_for_stop", "process")
    with WorkerManager({"reader": spec}, search_path=str(TESTS)) as m:
        wid = m.start("reader", [f"{unique_name}_gone"])
        st = m.wait(wid, timeout=20)
        assert st["state"] == "failed"
        # RingNotFoundError (or its subclass naming the missing supervisor too)
        assert re.search(r"(RingNotFound|NoSupervisor)Error", st["error"])
        assert f"{unique_name}_gone" in st["error"]


def test_epoch_example_as_process_worker(ring_factory, tmp_path):
    sig = ring_factory("sig", n_channels=2, capacity=2000, srate=100.0)
    mk = ring_factory("mk", n_channels=1, capacity=64, dtype="string", srate=0.0)
    out = tmp_path / "epochs.npz"
    spec = make_spec(
        "epochs",
        "epoch_worker:run",
        "process",
        kwargs={"pre_s": 0.2, "post_s": 0.5, "out": str(out), "max_epochs": 2},
    )
    rings = {"sig": sig.name, "mk": mk.name}
    m = WorkerManager({"epochs": spec}, resolve=rings.__getitem__, search_path=str(EXAMPLES))
    with m, collect_logs() as logs:
        wid = m.start("epochs", ["sig", "mk"])
        wait_until(lambda: logs.has(wid, "locked to"), timeout=20)
        sig.write(_ramp(0, 221, 2), np.arange(221) / 100.0)  # t = 0 .. 2.2 s
        mk.write(np.array([["left"], ["right"]], dtype=object), np.array([1.0, 2.0]))
        wait_until(lambda: logs.has(wid, "epoch 1: 'left'"), timeout=10)
        assert not logs.has(wid, "epoch 2")  # "right" needs data up to 2.5 s
        sig.write(_ramp(221, 179, 2), np.arange(221, 400) / 100.0)
        st = m.wait(wid, timeout=20)
        assert st["state"] == "finished", st["error"]
        assert logs.has(wid, "epoch 2: 'right'")
    got = np.load(out)
    assert list(got["labels"]) == ["left", "right"]
    assert got["epochs"].shape == (2, 70, 2)
    np.testing.assert_array_equal(got["epochs"][0], _ramp(80, 70, 2))
    np.testing.assert_array_equal(got["epochs"][1], _ramp(180, 70, 2))


@pytest.mark.lsl
def test_bandpower_example_as_thread_worker_publishes_lsl(ring_factory, unique_name):
    import pylsl

    sig = ring_factory("sig", n_channels=3, capacity=2000, srate=200.0)
    t = np.arange(400) / 200.0
    x = np.stack([np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 30 * t), 0 * t], axis=1)
    sig.write(x.astype(np.float32), t)
    outlet = f"{unique_name}_bp"
    shipped = load_config(EXAMPLES / "workers.toml").workers["bandpower"]  # its params too
    spec = dataclasses.replace(shipped, name="bp", kwargs={"outlet": outlet})
    rings = {"sig": sig.name}
    with WorkerManager({"bp": spec}, resolve=rings.__getitem__, search_path=str(EXAMPLES)) as m:
        wid = m.start("bp", ["sig"], {"band": [8, 12], "period_s": 0.05})
        found = pylsl.resolve_byprop("name", outlet, 1, 5.0)
        assert found, f"the worker's outlet {outlet!r} did not appear"
        inlet = pylsl.StreamInlet(found[0])
        try:
            sample, _ts = inlet.pull_sample(timeout=5.0)
            assert sample is not None
            assert sample[0] > 10 * sample[1] and sample[0] > 10 * sample[2]
        finally:
            inlet.close_stream()
        assert m.stop(wid)["state"] == "stopped"
    assert "bandpower_worker" in sys.modules
