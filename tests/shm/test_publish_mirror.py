"""The LSL mirror of a published stream (``lsl=True``): a plain pylsl inlet receives
the same values and timestamps, and the supervisor does not read its own mirror."""

from __future__ import annotations

import time

import numpy as np
import pylsl
import pytest
from helpers import wait_until
from supervisor_util import Sup, segments

import dpshm
from dpshm.shm import registry
from dpshm.shm.publish import MIRROR_DESC
from dpshm.shm.view import SharedStreamView

pytestmark = pytest.mark.lsl


def test_mirror_received_by_pylsl_and_not_picked_up(procs):
    ns, started = procs
    name, n_ch, rate, n = f"{ns}-mirror", 4, 250.0, 500
    # the supervisor selects the stream's name: it sees the mirror on every resolve
    sup = Sup(ns, name)
    started.append(sup)
    sup.ready()
    labels = [f"c{i}" for i in range(n_ch)]
    with dpshm.publish_stream(name, n_ch, rate, channel_names=labels, type="EEG", lsl=True) as pub:
        (info,) = wait_until(lambda: pylsl.resolve_byprop("name", name, 1, 1.0), 10)
        assert info.source_id() == pub.source_id and info.channel_count() == n_ch
        assert info.nominal_srate() == rate and info.type() == "EEG"
        inlet = pylsl.StreamInlet(info, max_buflen=10, processing_flags=0)
        try:
            full = inlet.info(timeout=5.0)
            assert full.desc().child(MIRROR_DESC).child_value("key") == pub.key
            inlet.open_stream(timeout=5.0)
            t0 = time.monotonic() + 1.0  # any timestamps: they must arrive unchanged
            data = np.arange(n * n_ch, dtype=np.float32).reshape(n, n_ch) / 7.0
            ts = t0 + np.arange(n) / rate + np.linspace(0, 1e-4, n)  # not exactly regular
            with SharedStreamView(name) as view:
                for a in range(0, n, 50):
                    pub.push_chunk(data[a : a + 50], ts[a : a + 50])
                got, got_ts = [], []
                deadline = time.monotonic() + 10
                while sum(map(len, got_ts)) < n and time.monotonic() < deadline:
                    d, t = inlet.pull_chunk(timeout=0.5, max_samples=n)
                    if t:
                        got.append(np.asarray(d, dtype=np.float32))
                        got_ts.append(np.asarray(t))
                np.testing.assert_array_equal(np.concatenate(got), data)
                np.testing.assert_array_equal(np.concatenate(got_ts), ts)
                shared, shared_ts = view.get_window(n_samples=n, copy=True)
                np.testing.assert_array_equal(shared, data)
                np.testing.assert_array_equal(shared_ts, ts)
        finally:
            inlet.close_stream()
            del inlet
        # the supervisor resolves every 0.3 s and sees the mirror each time; for 5 of its
        # intervals it never connects an inlet nor creates a ring for it
        mine = [f"dpshm_{pub.ring.name}"]
        # the test's own inlet takes a moment to leave the outlet after close_stream()
        wait_until(lambda: not pub.outlet.have_consumers(), timeout=5.0)
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            assert not pub.outlet.have_consumers(), "the supervisor reads its own mirror"
            assert segments(ns) == mine
            time.sleep(0.05)
        reg = registry.read_registry(ns)
        entries = [e for e in reg.streams.values() if e.name == name]
        assert [e.producer_pid for e in entries] == [pub.ring.writer_pid]
        assert "cannot share" not in sup.output
        with SharedStreamView(name) as view:  # not ambiguous
            assert view.ring.name == pub.ring.name
    assert sup.stop() == 0, sup.output
