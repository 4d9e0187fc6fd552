"""A view that re-attaches after its supervisor was restarted says what it missed:
`reattached`, `gaps`, `lost` (regular streams) and warnings (markers). A real
`dpshm up` is stopped and a new one started; real LSL outlets."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers import wait_until
from supervisor_util import Sup

from dpshm import lsl
from dpshm.shm.view import SharedStreamView

pytestmark = pytest.mark.lsl


def _up(ns: str, started: list, out) -> Sup:
    """A supervisor sharing ``out``, once its inlet is connected (what is pushed now
    is captured)."""
    sup = Sup(ns, out.spec.name)
    started.append(sup)
    sup.entry(out.spec.name)
    wait_until(out.have_consumers, 15)
    return sup


def _down(sup: Sup, out) -> None:
    """Stop the supervisor; return once the outlet has no consumer left."""
    assert sup.stop() == 0, sup.output
    wait_until(lambda: not out.have_consumers(), 15)


def _push(outlet, idx, t0: float, srate: float) -> None:
    for i in idx:  # sample i holds i and is stamped t0 + i / srate
        outlet.push_sample([float(i)], t0 + i / srate)


def _warned_gone(view, caplog) -> bool:
    view.wait(0.05)  # the view looks at the registry while it waits
    return "the supervisor of namespace" in caplog.text and "is gone" in caplog.text


def _reattached(view) -> bool:
    view.wait(0.05)  # follows the stream (it does not read)
    return view.reattached == 1


def _read_until(view, n: int, timeout: float = 15.0):
    data, lost = [], []

    def enough():
        if view.wait(0.2):
            d, _, k = view.read_new()
            data.append(d)
            lost.append(k)
        return sum(len(d) for d in data) >= n

    wait_until(enough, timeout)
    return np.concatenate(data), sum(lost)


def test_regular_stream_counts_what_no_supervisor_captured(procs, outlets, caplog):
    ns, started = procs
    srate = 100.0
    out = outlets.make(n_channels=1, srate=srate)
    t0 = lsl.local_clock()
    caplog.set_level(logging.INFO, logger="dpshm")
    sup = _up(ns, started, out)
    with SharedStreamView(out.spec.name, timeout=15) as view:
        _push(out, range(30), t0, srate)
        data, lost = _read_until(view, 30)
        np.testing.assert_array_equal(data[:, 0], np.arange(30))
        assert lost == 0 and view.reattached == 0 and not view.gaps
        _push(out, range(30, 50), t0, srate)  # written, but the view does not read them
        wait_until(lambda: view.head == 50, 10)
        _down(sup, out)
        # no supervisor: the view notices and says so; what is pushed now is not captured
        wait_until(lambda: _warned_gone(view, caplog), 10)
        _push(out, range(50, 150), t0, srate)
        _up(ns, started, out)
        wait_until(lambda: _reattached(view), 10)  # before it read the 20 old ones
        _push(out, range(150, 200), t0, srate)
        data, lost = _read_until(view, 50)
        np.testing.assert_array_equal(data[:, 0], np.arange(150, 200))
        assert view.reattached == 1 and len(view.gaps) == 1
        gap = view.gaps[0]
        assert gap.reason == "supervisor restarted" and gap.unread == 20 and gap.missed == 100
        assert gap.last_t == pytest.approx(t0 + 49 / srate, abs=1e-3)
        assert gap.next_t == pytest.approx(t0 + 150 / srate, abs=1e-3)
        assert gap.since <= gap.until
        assert lost == 120 and view.lost_samples == 120  # 20 unread + 100 never captured
        assert "after the supervisor restarted: 20 unread samples" in caplog.text
        assert "100 samples sent while no supervisor ran were not captured" in caplog.text


def test_marker_stream_reports_the_unknown_gap(procs, outlets, caplog):
    ns, started = procs
    out = outlets.make(type="Markers", n_channels=1, srate=0.0, channel_format="string")
    caplog.set_level(logging.INFO, logger="dpshm")
    sup = _up(ns, started, out)
    with SharedStreamView(type="Markers", source_id=out.spec.source_id, timeout=15) as view:
        out.push_sample(["before"])
        data, _ = _read_until(view, 1)
        assert list(data[:, 0]) == ["before"]
        _down(sup, out)
        wait_until(lambda: _warned_gone(view, caplog), 10)
        out.push_sample(["missed-1"])
        out.push_sample(["missed-2"])
        _up(ns, started, out)
        out.push_sample(["after"])
        data, lost = _read_until(view, 1)
        assert list(data[:, 0]) == ["after"]
        assert view.reattached == 1 and view.gaps[0].reason == "supervisor restarted"
        assert view.gaps[0].missed is None and view.gaps[0].next_t is not None
        assert lost == 0 and view.lost_samples == 0  # how many markers were missed: unknown
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("markers sent while no supervisor ran" in r.getMessage() for r in warned)
