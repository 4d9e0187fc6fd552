"""Min/max decimation per pixel column on a real shared-memory ring (no supervisor)."""

from __future__ import annotations

import numpy as np
import pytest

from dpshm.shm.ring import SharedRing
from dpshm.viewer.columns import decimate
from dpshm.viewer.data import ViewerError, WindowRequest


@pytest.fixture
def ring(unique_name):
    r = SharedRing.create(unique_name, 3, 100, "float32", srate=100.0)
    yield r
    r.unlink()
    r.close()


def _rows(start: int, n: int, nch: int = 3) -> np.ndarray:
    rng = np.random.default_rng(start)
    return rng.standard_normal((n, nch)).astype(np.float32)


def test_columns_are_min_max_of_their_samples(ring):
    data = _rows(0, 47)
    ring.write(data, np.arange(47) / 100.0)
    with SharedRing.attach(ring.name) as r:
        times, mm = decimate(r, 1, 9, spc=5, ch0=0, nch=3)  # 47 samples: 9 columns of 5
        assert mm.shape == (8, 3, 2) and mm.dtype == np.float32
        for i, c in enumerate(range(1, 9)):
            block = data[c * 5 : (c + 1) * 5]
            np.testing.assert_array_equal(mm[i, :, 0], block.min(axis=0))
            np.testing.assert_array_equal(mm[i, :, 1], block.max(axis=0))
            assert times[i] == pytest.approx((c * 5 + 4) / 100.0)
        # the columns of a later call continue those of an earlier one: what a page
        # assembles from increments is one decimation of all the samples
        more = _rows(47, 13)
        ring.write(more, np.arange(47, 60) / 100.0)
        t2, mm2 = decimate(r, 9, 12, spc=5, ch0=1, nch=2)  # channels 1..2 only
        assert mm2.shape == (3, 2, 2)
        tall, mmall = decimate(r, 1, 12, spc=5, ch0=1, nch=2)
        np.testing.assert_array_equal(np.concatenate([mm[:, 1:3], mm2]), mmall)
        np.testing.assert_array_equal(np.concatenate([times, t2]), tall)
        allrows = np.concatenate([data, more])
        np.testing.assert_array_equal(mm2[0, :, 1], allrows[45:50, 1:3].max(axis=0))
        assert decimate(r, 12, 12, 5, 0, 3)[1].shape == (0, 3, 2)


def test_columns_overwritten_before_reading_are_blank(ring):
    data = _rows(0, 320)
    ring.write(data, np.arange(320) / 100.0)  # the ring keeps 100: samples 0..219 are gone
    with SharedRing.attach(ring.name) as r:
        times, mm = decimate(r, 34, 64, spc=5, ch0=0, nch=3)
    gone = slice(0, 44 - 34)  # columns 34..43 (samples 170..219)
    # columns nobody could compute are NaN, never what their rows hold now
    assert np.isnan(mm[gone]).all() and np.isnan(times[gone]).all()
    assert np.isfinite(mm[gone.stop :]).all() and np.isfinite(times[gone.stop :]).all()
    np.testing.assert_array_equal(mm[:, :, 1][gone.stop :], data[220:].reshape(20, 5, 3).max(1))


def test_integer_rings_are_decimated_exactly(unique_name):
    with SharedRing.create(unique_name, 2, 64, "int16", srate=10.0) as w:
        try:
            data = np.arange(-40, 40, dtype=np.int16).reshape(40, 2)
            w.write(data, np.arange(40) / 10.0)
            with SharedRing.attach(w.name) as r:
                _, mm = decimate(r, 0, 8, spc=5, ch0=0, nch=2)
            np.testing.assert_array_equal(mm[:, :, 0], data.reshape(8, 5, 2).min(axis=1))
            np.testing.assert_array_equal(mm[:, :, 1], data.reshape(8, 5, 2).max(axis=1))
        finally:
            w.unlink()


def test_window_request_bounds():
    ok = WindowRequest.from_query({"key": "k", "seconds": "2", "width": "300", "since": "7"})
    assert (ok.seconds, ok.width, ok.since) == (2.0, 300, 7)
    for q, word in [
        ({}, "key"),
        ({"key": "k", "seconds": "nan"}, "seconds='nan' is out of range"),
        ({"key": "k", "seconds": "1e9"}, "seconds"),
        ({"key": "k", "width": "100000"}, "width"),
        ({"key": "k", "width": "wide"}, "not an integer"),
        ({"key": "k", "since": "-1"}, "since"),
    ]:
        with pytest.raises(ViewerError, match=word):
            WindowRequest.from_query(q)
