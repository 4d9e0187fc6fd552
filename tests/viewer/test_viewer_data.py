"""Min/max decimation per pixel column on a real shared-memory ring (no supervisor)."""

from __future__ import annotations

import numpy as np
import pytest

from dpshm.shm.ring import SharedRing
from dpshm.viewer.data import Decimator, ViewerError, WindowRequest


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
        dec = Decimator(r, spc=5, n_cols=8)
        assert dec.update() == 9  # 47 samples: 9 complete columns of 5
        first, times, mm = dec.columns(None, 0, 3)
        assert first == 1 and len(times) == 8  # the window keeps the newest 8
        for i, c in enumerate(range(1, 9)):
            block = data[c * 5 : (c + 1) * 5]
            np.testing.assert_array_equal(mm[i, :, 0], block.min(axis=0))
            np.testing.assert_array_equal(mm[i, :, 1], block.max(axis=0))
            assert times[i] == pytest.approx((c * 5 + 4) / 100.0)
        # a poll holding columns up to 9 gets only what is new
        more = _rows(47, 13)
        ring.write(more, np.arange(47, 60) / 100.0)
        assert dec.update() == 12
        first, times, mm = dec.columns(9, 1, 2)  # channels 1..2 only
        assert first == 9 and mm.shape == (3, 2, 2)
        allrows = np.concatenate([data, more])
        np.testing.assert_array_equal(mm[0, :, 1], allrows[45:50, 1:3].max(axis=0))


def test_columns_overwritten_before_reading_are_blank(ring):
    def write(a: int, b: int) -> None:
        ring.write(_rows(a, b - a), np.arange(a, b) / 100.0)

    with SharedRing.attach(ring.name) as r:
        dec = Decimator(r, spc=5, n_cols=30)  # slots are reused: column c lives in c % 30
        write(0, 100)
        assert dec.update() == 20
        write(100, 200)
        assert dec.update() == 40
        write(200, 320)  # more than the ring (100) since the last update: 40..43 are gone
        assert dec.update() == 64
        first, times, mm = dec.columns(None, 0, 3)
        assert first == 34 and len(times) == 30
        gone = slice(40 - 34, 44 - 34)
        # columns nobody could compute are NaN, never what their slot held before (10..13)
        assert np.isnan(mm[gone]).all() and np.isnan(times[gone]).all()
        assert np.isfinite(mm[: gone.start]).all() and np.isfinite(mm[gone.stop :]).all()
        np.testing.assert_array_equal(mm[-1, :, 1], _rows(200, 120)[-5:].max(axis=0))


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
