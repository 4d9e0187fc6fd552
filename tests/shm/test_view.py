"""SharedStreamView: StreamWatcher compatibility, windows, loss accounting, lifetime."""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest
from helpers import import_original
from test_ring import in_flight, make_ring  # noqa: F401  (make_ring: a fixture)

from dpshm.shm.view import SharedStreamView


@pytest.fixture
def eeg(make_ring):  # noqa: F811
    ring = make_ring(
        n_channels=3, capacity=10, dtype="float32", srate=100.0,
        channel_names=["C3", "Cz", "C4"], meta={"source_id": "amp1"},
    )  # fmt: skip
    return ring


def _chunk(start: int, k: int, n_ch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(start, start + k)
    return (idx[:, None] * 10 + np.arange(n_ch)).astype(np.float32), idx / 100.0


def test_properties_mirror_the_ring(eeg):
    eeg.set_time_offset(0.5)
    with SharedStreamView(eeg.name) as sv:
        assert sv.channel_names == ["C3", "Cz", "C4"] and sv.meta == {"source_id": "amp1"}
        assert (sv.capacity, sv.srate, sv.n_channels, sv.format) == (10, 100.0, 3, "float32")
        assert sv.dtype == np.float32 and sv.time_offset == 0.5 and not sv.stale
        assert sv.generation == eeg.generation and sv.writer_pid == eeg.writer_pid
        assert sv.head == 0 and sv.latest_timestamp is None and sv.curr_i == 0
        assert sv.buffer.shape == (10, 3) and sv.buffer_t.shape == (10,)
        assert "head=0" in repr(sv)


def test_update_n_new_accumulates_until_reset(eeg):
    sv = SharedStreamView(eeg.name)
    try:
        eeg.write(*_chunk(0, 4))
        assert sv.update() == 4 and sv.n_new == 4
        np.testing.assert_array_equal(sv.samples, _chunk(0, 4)[0])
        eeg.write(*_chunk(4, 3))
        sv.update()
        assert sv.n_new == 7 and sv.last_t == pytest.approx(0.06)
        np.testing.assert_array_equal(sv.samples, _chunk(4, 3)[0])
        np.testing.assert_array_equal(sv.unfold_buffer()[-sv.n_new :], _chunk(0, 7)[0])
        sv.n_new = 0
        assert sv.update() == 0 and sv.n_new == 0
        np.testing.assert_array_equal(sv.samples, _chunk(4, 3)[0])  # unchanged when nothing new
        eeg.write(*_chunk(7, 25))  # laps the ring: 15 of them are gone
        assert sv.update() == 25 and sv.n_new == 25 and sv.lost_samples == 15
        assert sv.curr_i == 32 % 10
    finally:
        sv.close()


@pytest.mark.interop
def test_matches_dareplane_ringbuffer(eeg):
    """Same chunks into dareplane-utils' RingBuffer and our ring: same StreamWatcher view."""
    pytest.importorskip("dareplane_utils")
    rb_mod = import_original("dareplane_utils.general.ringbuffer")
    rb = rb_mod.RingBuffer((10, 3), dtype=np.float32)
    with SharedStreamView(eeg.name) as sv:
        start = 0
        for k in (3, 4, 6, 1, 9, 2, 10):
            data, ts = _chunk(start, k)
            start += k
            eeg.write(data, ts)
            rb.add_samples(data, ts)
            sv.update()
            np.testing.assert_array_equal(sv.unfold_buffer(), rb.unfold_buffer())
            np.testing.assert_array_equal(sv.unfold_buffer_t(), rb.unfold_buffer_t())
            np.testing.assert_array_equal(sv.buffer, rb.buffer)
            assert sv.curr_i == rb.curr_i


def test_get_window_zero_copy_and_copy(eeg):
    with SharedStreamView(eeg.name) as sv:
        eeg.write(*_chunk(0, 6))
        d, t = sv.get_window()  # whole ring, but only what was written
        assert d.shape == (6, 3) and not d.flags.writeable and not t.flags.writeable
        d2, t2 = sv.get_window(seconds=0.03)
        np.testing.assert_array_equal(d2, _chunk(3, 3)[0])
        np.testing.assert_allclose(t2, _chunk(3, 3)[1])
        c, ct = sv.get_window(4, copy=True)
        np.testing.assert_allclose(ct, _chunk(2, 4)[1])
        assert c.flags.writeable and c.flags.owndata
        eeg.write(*_chunk(6, 10))  # overwrites everything the zero-copy view showed
        np.testing.assert_array_equal(c, _chunk(2, 4)[0])  # the copy is private
        assert not np.array_equal(d, _chunk(0, 6)[0])  # the view is live memory
        for kwargs, msg in [
            ({"n_samples": 11}, "keeps 10"),
            ({"n_samples": -1}, "window of -1"),
            ({"n_samples": 2, "seconds": 0.1}, "not both"),
            ({"seconds": 1.0}, "keeps 10"),
        ]:
            with pytest.raises(ValueError, match=msg):
                sv.get_window(**kwargs)


def test_next_window_waits_then_returns_the_newest_window(eeg):
    with SharedStreamView(eeg.name) as sv:
        t0 = time.monotonic()
        assert sv.next_window(4, timeout=0.05) is None  # nothing new: bounded
        assert 0.04 <= time.monotonic() - t0 < 2.0
        eeg.write(*_chunk(0, 3))
        d, t = sv.next_window(4)  # only what was written
        np.testing.assert_array_equal(d, _chunk(0, 3)[0])
        assert not d.flags.writeable and (sv.n_new, sv.skipped_samples) == (3, 0)
        assert sv.next_window(4, timeout=0.01) is None  # the cursor moved to its end
        eeg.write(*_chunk(3, 9))  # head 12: the window is 8..11, samples 3..7 never shown
        d, t = sv.next_window(4, copy=True)
        np.testing.assert_array_equal(d, _chunk(8, 4)[0])
        np.testing.assert_allclose(t, _chunk(8, 4)[1])
        assert d.flags.writeable and (sv.n_new, sv.skipped_samples) == (12, 5)
        eeg.write(*_chunk(12, 2))
        d, t = sv.next_window(seconds=0.05)  # 5 samples: 9..13, all new ones inside
        np.testing.assert_array_equal(d, _chunk(9, 5)[0])
        assert (sv.n_new, sv.skipped_samples, sv.lost_samples) == (14, 5, 0)
        t0 = time.monotonic()
        for kwargs, msg in [
            ({"n_samples": 11}, "keeps 10"),
            ({"n_samples": 2, "seconds": 0.1}, "not both"),
        ]:
            with pytest.raises(ValueError, match=msg):  # before any waiting
                sv.next_window(**kwargs, timeout=30.0)
        assert time.monotonic() - t0 < 5.0
    with pytest.raises(ValueError, match="closed"):
        sv.next_window(4, timeout=0)
    with SharedStreamView(eeg.name) as sv:
        sv.ring.close()  # closed under the view: a clear error, not a crash
        for call in (lambda: sv.wait(0.01), lambda: sv.next_window(4, timeout=0.01), sv.update):
            with pytest.raises(ValueError, match="closed"):
                call()


def test_read_new_reports_exact_losses(eeg):
    with SharedStreamView(eeg.name) as sv:
        eeg.write(*_chunk(0, 5))
        d, t, lost = sv.read_new()
        assert lost == 0 and len(d) == 5
        eeg.write(*_chunk(5, 13))
        d, t, lost = sv.read_new()
        assert lost == 3 and sv.lost_samples == 3  # head 18, cursor 5, capacity 10
        np.testing.assert_array_equal(d, _chunk(8, 10)[0])
        d, t, lost = sv.read_new()
        assert (len(d), len(t), lost) == (0, 0, 0) and d.shape == (0, 3)


def test_read_new_and_update_never_count_a_loss_without_its_rows(eeg):
    with SharedStreamView(eeg.name) as sv:
        eeg.write(*_chunk(0, 4))
        assert sv.update() == 4
        eeg.write(*_chunk(4, 3))  # head 7, cursor 4
        with in_flight(eeg, 10):  # the writer laps the ring while the view copies
            assert sv.update() == 0 and sv.n_new == 4
            np.testing.assert_array_equal(sv.samples, _chunk(0, 4)[0])  # still the last rows
            d, _, lost = sv.read_new()
            assert (len(d), lost, sv.lost_samples) == (0, 0, 0)
        eeg.write(*_chunk(7, 10))  # head 17: samples 4..6 were overwritten
        assert sv.update() == 13 and sv.n_new == 17 and sv.lost_samples == 3
        np.testing.assert_array_equal(sv.samples, _chunk(7, 10)[0])


def test_window_copies_count_the_rows_they_leave_out(eeg, caplog):
    with SharedStreamView(eeg.name) as sv, caplog.at_level("WARNING", logger="dpshm.shm.view"):
        eeg.write(*_chunk(0, 10))
        with in_flight(eeg, 3):  # samples 0..2 are being overwritten in every attempt
            d, t = sv.get_window(10, copy=True)
            np.testing.assert_array_equal(d, _chunk(3, 7)[0])
            np.testing.assert_allclose(t, _chunk(3, 7)[1])
            assert sv.cut_samples == 3
            assert len(sv.unfold_buffer()) == 7 and sv.cut_samples == 6
            np.testing.assert_allclose(sv.unfold_buffer_t(), _chunk(3, 7)[1])
            d, _ = sv.next_window(10, copy=True, timeout=1.0)  # the cursor is still 0
            np.testing.assert_array_equal(d, _chunk(3, 7)[0])
            # 0..2 arrived but never appeared in a window
            assert (sv.n_new, sv.skipped_samples, sv.cut_samples) == (10, 3, 12)
            assert len(sv.get_window(7, copy=True)[0]) == 7 and sv.cut_samples == 12
        assert len(sv.get_window(10, copy=True)[0]) == 10 and sv.cut_samples == 12
    warned = [r for r in caplog.records if "cut_samples" in r.getMessage()]
    assert len(warned) == 1, "warned once per view"


def test_view_starts_at_the_current_head(eeg):
    eeg.write(*_chunk(0, 4))
    with SharedStreamView(eeg.name) as sv:
        d, _, lost = sv.read_new()
        assert len(d) == 0 and lost == 0
        assert sv.unfold_buffer().shape == (10, 3)
        assert sv.latest_timestamp == pytest.approx(0.03)


def test_buffer_size_s_limits_unfold(eeg, caplog):
    eeg.write(*_chunk(0, 12))
    with SharedStreamView(eeg.name, buffer_size_s=0.05) as sv:
        np.testing.assert_array_equal(sv.unfold_buffer(), _chunk(7, 5)[0])
        assert sv.get_window()[0].shape == (5, 3)
    with caplog.at_level("WARNING", logger="dpshm.shm.view"):
        sv = SharedStreamView(eeg.name, buffer_size_s=2.0)
    sv.close()
    assert sv.closed and any("keeps 10 samples" in r.getMessage() for r in caplog.records)


def test_irregular_ring_rejects_seconds(make_ring):  # noqa: F811
    ring = make_ring(n_channels=1, capacity=4, srate=0.0)
    with SharedStreamView(ring.name) as sv, pytest.raises(ValueError, match="irregular"):
        sv.get_window(seconds=1)


def test_string_ring_reads(make_ring):  # noqa: F811
    ring = make_ring(n_channels=1, capacity=4, dtype="string", string_width=16)
    with SharedStreamView(ring.name) as sv:
        assert sv.unfold_buffer().tolist() == [[""]] * 4
        ring.write([["start_trial"], ["Grüße"]], [1.0, 2.0])
        sv.update()
        assert sv.samples.dtype == object and sv.samples.tolist() == [["start_trial"], ["Grüße"]]
        raw, _ = sv.get_window()
        assert raw.dtype == np.dtype("S16") and raw[1, 0] == "Grüße".encode()
        assert sv.get_window(copy=True)[0].tolist() == [["start_trial"], ["Grüße"]]
        assert sv.unfold_buffer()[-1, 0] == "Grüße"


def test_close_with_live_views_and_idempotent(eeg):
    eeg.write(*_chunk(0, 10))
    sv = SharedStreamView(eeg.name)
    d, t = sv.get_window()
    buf = sv.buffer
    sv.close()
    sv.close()
    gc.collect()
    np.testing.assert_array_equal(d, _chunk(0, 10)[0])  # still readable, no crash
    assert buf.shape == (10, 3) and t[-1] == pytest.approx(0.09)
    with pytest.raises(ValueError, match="closed"):
        sv.update()
    assert "closed" in repr(sv)
    del d, t, buf
    gc.collect()


def test_connect_to_stream_reattaches(eeg, make_ring):  # noqa: F811
    other = make_ring(n_channels=2, capacity=5)
    sv = SharedStreamView(eeg.name)
    sv.connect_to_stream({"name": other.name})
    assert sv.name == other.name and sv.n_channels == 2
    sv.disconnect()
    assert sv.closed
