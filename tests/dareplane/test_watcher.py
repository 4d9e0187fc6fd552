"""StreamWatcher against real loopback LSL outlets."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers import ROOT, import_original, wait_until
from lsl_util import ramp

from dpshm.dareplane.ringbuffer import RingBuffer
from dpshm.dareplane.watcher import (
    StreamWatcher,
    StreamWatcherNotConnected,
    get_channel_names,
    get_streams_names,
    pylsl_xmlelement_to_dict,
)
from dpshm.errors import AmbiguousStreamError, StreamNotFoundError

pytestmark = pytest.mark.lsl


def receive(sw: StreamWatcher, n: int, timeout: float = 5.0) -> int:
    """Call update() until ``n`` samples arrived in total; return the count."""
    got = 0

    def done() -> bool:
        nonlocal got
        got += sw.update()
        return got >= n

    wait_until(done, timeout)
    return got


def test_connect_attributes_and_ramp_through_wraparound(outlets, caplog, unique_name):
    out = outlets.make(n_channels=4, srate=100.0, channel_names=["a", "b", "c", "d"])
    log = logging.getLogger(f"test_watcher.{unique_name}")
    with StreamWatcher(out.spec.name, 0.5, log, resolve_timeout=3.0) as sw:
        sw.connect_to_stream()
        assert sw.inlet is not None and sw.spec.uid == out.spec.uid
        # pylsl StreamInfo, as the original: modules call streams[0].nominal_srate()
        assert sw.streams[0].nominal_srate() == 100.0 and sw.streams[0].uid() == out.spec.uid
        assert sw.streams[0].channel_count() == 4
        info = sw.inlet.info()  # modules call sw.inlet.info().nominal_srate()
        assert info.nominal_srate() == 100.0
        assert info.desc().child("channels").child("channel").child_value("label") == "a"
        assert sw.channel_names == ["a", "b", "c", "d"]
        assert sw.buffer.shape == (50, 4) and sw.buffer.dtype == np.float32
        assert sw.buffer_t.shape == (50,) and sw.chunk_buffer_size == 32768
        sent = ramp(0, 137, 4)
        total = 0
        with caplog.at_level(logging.WARNING, logger=log.name):
            for start in range(0, 137, 9):  # chunks of 9 rows: wrap at odd places
                out.push_chunk(sent[start : start + 9])
                total += receive(sw, len(sent[start : start + 9]))
                assert sw.curr_i == total % 50  # always current, never stale
                np.testing.assert_array_equal(sw.samples[-1], sent[total - 1])
        assert total == 137
        np.testing.assert_array_equal(sw.unfold_buffer(), sent[-50:])
        t = sw.unfold_buffer_t()
        assert np.all(t > 0) and sw.last_t == t[-1]
        np.testing.assert_array_equal(sw.buffer[sw.curr_i], sent[-50])  # oldest
        # n_new is clipped to what the buffer holds, the excess counted, once warned
        assert sw.n_new == 50 and sw.n_new_clipped == 137 - 50
        warnings = [r for r in caplog.records if "n_new" in r.getMessage()]
        assert len(warnings) == 1
        sw.n_new = 0
        out.push_chunk(sent[:3])
        receive(sw, 3)
        assert sw.n_new == 3
    assert sw.inlet is None
    sw.disconnect()  # idempotent


def test_every_sample_is_in_samples_or_counted_clipped(outlets):
    """Overrun: updates that pull more than the buffer holds (several pulls per update)."""
    out = outlets.make(n_channels=2, srate=100.0)
    rng = np.random.default_rng(5)
    n_total = 3000
    sent = ramp(0, n_total, 2)
    with StreamWatcher(out.spec.name, 0.5, resolve_timeout=3.0) as sw:
        sw.chunk_buffer_size = 16  # one update pulls many chunks into a 50-row ring
        sw.connect_to_stream()
        state = {"next": 0, "got": 0, "clipped": 0}

        def take() -> int:
            sw.n_new = 0  # as a consumer does after reading
            clipped = sw.n_new_clipped
            ret = sw.update()
            d_clip = sw.n_new_clipped - clipped
            if ret:
                j = (np.asarray(sw.samples)[:, 0] // 10).astype(int)
                assert len(j) == ret - d_clip == sw.n_new
                assert j.tolist() == list(range(state["next"] + d_clip, state["next"] + ret))
                np.testing.assert_array_equal(sw.samples, sent[j])
                state["next"] += ret
            state["got"] += ret - d_clip
            state["clipped"] += d_clip
            return ret

        pushed = 0
        while pushed < n_total:
            k = min(int(rng.integers(1, 150)), n_total - pushed)
            out.push_chunk(sent[pushed : pushed + k])
            pushed += k
            if rng.random() < 0.3:
                take()
        wait_until(lambda: take() == 0 and state["next"] == n_total, 10)
    assert state["got"] + state["clipped"] == n_total
    assert state["clipped"] > 0, "no update overran the buffer"


@pytest.mark.parametrize("fmt", ["double64", "int8", "int16", "int32", "int64"])
def test_numeric_formats(outlets, fmt):
    out = outlets.make(n_channels=2, srate=50.0, channel_format=fmt)
    with StreamWatcher(out.spec.name, buffer_size_s=1, resolve_timeout=3.0) as sw:
        sw.connect_to_stream()
        assert sw.buffer.dtype == out.spec.dtype
        sent = ramp(0, 70, 2, out.spec.dtype)
        out.push_chunk(sent)
        receive(sw, 70)
        np.testing.assert_array_equal(sw.unfold_buffer(), sent[-50:])


def test_string_markers_irregular(outlets):
    out = outlets.make(type="Markers", n_channels=1, srate=0.0, channel_format="string")
    sw = StreamWatcher(out.spec.name, irregular_buffer_samples=5, resolve_timeout=3.0)
    with sw:
        sw.connect_to_stream()
        assert sw.buffer.shape == (5, 1) and sw.buffer.dtype == object
        markers = [f"trial_{i}" for i in range(8)]
        for m in markers[:3]:
            out.push_sample([m])
        receive(sw, 3)
        assert list(sw.unfold_buffer()[:, 0]) == ["", "", *markers[:3]]
        out.push_chunk([[m] for m in markers[3:]])
        receive(sw, 5)
        assert list(sw.unfold_buffer()[:, 0]) == markers[-5:]
        assert list(sw.samples[:, 0]) == markers[-5:]


def test_default_irregular_size(outlets):
    out = outlets.make(n_channels=1, srate=0.0)
    with StreamWatcher(out.spec.name, resolve_timeout=3.0) as sw:
        sw.connect_to_stream()
        assert sw.buffer.shape == (1000, 1)


def test_partial_labels(outlets):
    out = outlets.make(n_channels=3, channel_names=["", "Cz", ""])
    with StreamWatcher(out.spec.name, resolve_timeout=3.0) as sw:
        sw.connect_to_stream()
        assert sw.channel_names == ["ch_1", "Cz", "ch_3"]


def test_resolve_timeout_lists_visible(outlets, unique_name, caplog):
    out = outlets.make()
    module_log = logging.getLogger(f"t.module.{unique_name}")
    sw = StreamWatcher(f"{unique_name}_absent", resolve_timeout=0.3, logger=module_log)
    with (
        caplog.at_level(logging.ERROR, logger=module_log.name),
        pytest.raises(StreamNotFoundError) as ei,
    ):
        sw.connect_to_stream()
    assert out.spec.name in str(ei.value) and f"{unique_name}_absent" in str(ei.value)
    # started before its stream exists: the module's log says so (the original waited)
    [rec] = [r for r in caplog.records if r.name == module_log.name]
    assert rec.levelno == logging.ERROR and str(ei.value) in rec.getMessage()
    assert out.spec.name in get_streams_names(0.3)
    with pytest.raises(StreamWatcherNotConnected, match="connect_to_stream"):
        sw.update()
    with pytest.raises(StreamWatcherNotConnected):
        sw.unfold_buffer()
    assert sw.curr_i == 0 and sw.buffer.size == 0


def test_module_code_that_relinks_the_buffer(outlets):
    """What Dareplane modules do after connect_to_stream() (e.g. a passthrough decoder):
    replace ring_buffer, re-link buffer/buffer_t/last_t/curr_i, read the info dict."""
    out = outlets.make(n_channels=3, srate=100.0, channel_names=["x", "y", "z"])
    with StreamWatcher(out.spec.name, buffer_size_s=1, resolve_timeout=3.0) as sw:
        sw.connect_to_stream()
        inlet_info = pylsl_xmlelement_to_dict(sw.inlet.info())
        assert float(inlet_info["info"]["nominal_srate"]) == 100.0
        assert get_channel_names(sw.inlet.info()) == ["x", "y", "z"]
        sw.ring_buffer = RingBuffer((20, len(sw.channel_names)))
        sw.buffer = sw.ring_buffer.buffer
        sw.buffer_t = sw.ring_buffer.buffer_t
        sw.last_t = sw.ring_buffer.last_t
        sw.curr_i = sw.ring_buffer.curr_i
        sent = ramp(0, 25, 3)
        out.push_chunk(sent)
        receive(sw, 25)
        # re-linked attributes stay live (curr_i too: the original's went stale)
        assert sw.buffer is sw.ring_buffer.buffer and sw.curr_i == 25 % 20
        np.testing.assert_array_equal(sw.unfold_buffer(), sent[-20:])
        assert sw.last_t == sw.unfold_buffer_t()[-1] > 0
        # anything else assigned is kept as given, as the original's plain attributes
        sw.curr_i = 7
        assert sw.curr_i == 7
        sw.buffer = [[1, 2, 3]]
        assert sw.buffer == [[1, 2, 3]]
        sw.connect_to_stream()  # a new connection follows its new ring again
        assert sw.curr_i == sw.ring_buffer.curr_i and sw.buffer.shape == (100, 3)


def test_selection_by_type_source_id_and_identifier(outlets, unique_name):
    a = outlets.make(name=unique_name, type=f"{unique_name}_A")
    b = outlets.make(name=unique_name, type=f"{unique_name}_B")
    with pytest.raises(AmbiguousStreamError, match=a.spec.source_id):
        StreamWatcher(unique_name, resolve_timeout=3.0).connect_to_stream()
    with StreamWatcher(stream_type=f"{unique_name}_B", resolve_timeout=3.0) as sw:
        sw.connect_to_stream()
        assert sw.spec.uid == b.spec.uid
    with StreamWatcher("other", resolve_timeout=3.0) as sw:
        sw.connect_to_stream({"name": unique_name, "source_id": a.spec.source_id})
        assert sw.name == unique_name and sw.streams[0].uid() == a.spec.uid
    with pytest.raises(ValueError, match="no stream to look for"):
        StreamWatcher().connect_to_stream()


def test_outlet_disappears_and_comes_back(outlets, unique_name):
    sid = f"{unique_name}_src"
    out = outlets.make(name=unique_name, source_id=sid, n_channels=1, srate=100.0)
    with StreamWatcher(unique_name, buffer_size_s=1, resolve_timeout=3.0) as sw:
        sw.connect_to_stream()
        out.push_chunk(np.full((5, 1), 1.0))
        receive(sw, 5)
        out.close()
        assert sw.update() == 0  # gone: no data, no exception (recover=True)
        back = outlets.make(name=unique_name, source_id=sid, n_channels=1, srate=100.0)

        def resumed() -> bool:
            back.push_chunk(np.full((2, 1), 2.0))
            sw.update()
            return sw.samples.size > 0 and sw.samples[-1, 0] == 2.0

        wait_until(resumed, timeout=15.0, interval=0.05)
        assert sw.unfold_buffer()[-1, 0] == 2.0


@pytest.mark.interop
def test_same_data_as_original_streamwatcher(outlets):
    """The original dareplane-utils StreamWatcher and ours see the same buffer."""
    Original = import_original("dareplane_utils.stream_watcher.lsl_stream_watcher").StreamWatcher

    out = outlets.make(n_channels=3, srate=100.0, channel_names=["x", "y", "z"])
    orig = Original(out.spec.name, buffer_size_s=0.5)
    orig.logger = logging.Logger("silent", level=logging.CRITICAL)
    orig.connect_to_stream()
    try:
        with StreamWatcher(out.spec.name, buffer_size_s=0.5, resolve_timeout=3.0) as sw:
            sw.connect_to_stream()
            assert sw.channel_names == orig.channel_names
            sent = ramp(0, 80, 3)
            out.push_chunk(sent)
            receive(sw, 80)

            def orig_done() -> bool:
                orig.update()
                return orig.n_new >= 80

            wait_until(orig_done, 5.0)
            np.testing.assert_array_equal(sw.unfold_buffer(), orig.unfold_buffer())
            np.testing.assert_array_equal(sw.unfold_buffer_t(), orig.unfold_buffer_t())
            assert sw.buffer.shape == orig.buffer.shape
    finally:
        orig.disconnect()


def test_unrecoverable_loss_raises(outlets):
    """Without a source_id liblsl cannot recover: update() says so."""
    from dpshm.errors import StreamLostError

    out = outlets.make(n_channels=1, source_id="")
    with StreamWatcher(out.spec.name, resolve_timeout=3.0) as sw:
        sw.connect_to_stream()
        out.push_sample([1.0])
        receive(sw, 1)
        out.close()
        with pytest.raises(StreamLostError, match="outlet went away"):
            wait_until(lambda: sw.update() < 0, timeout=5.0)


def test_example_script_runs():
    """examples/stream_watcher.py runs against its own mock outlet and reads data."""
    import os
    import subprocess
    import sys

    root = ROOT
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.run(
        [sys.executable, str(root / "examples" / "stream_watcher.py"), "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "connected: channels ['Fz', 'Cz', 'Pz', 'Oz']" in proc.stdout
    assert "new samples" in proc.stdout
