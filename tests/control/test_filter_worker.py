"""The shipped filter worker: a raw published stream -> filter worker (declared in
config, process mode) -> filtered stream equal to the filter applied offline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
from helpers import wait_until
from supervisor_util import Proc, Sup, segments
from worker_targets import collect_logs

import dpshm
from dpshm.config import parse_toml
from dpshm.control.filter_worker import LiveFilter, design
from dpshm.control.workers import WorkerManager
from dpshm.errors import ConfigError
from dpshm.shm.view import SharedStreamView

N_CH, RATE, N = 4, 500.0, 5000

CONFIG = """
[workers.bandpass]
target = "dpshm.control.filter_worker:run"
mode = "process"
kwargs = {{ out = "{out}", band = [1.0, 40.0], notch = 50.0, order = 4 }}
"""


def _raw(n: int) -> np.ndarray:
    rng = np.random.default_rng(16)
    t = np.arange(n) / RATE
    line = 50 * np.sin(2 * np.pi * 50.0 * t)[:, None]  # line noise the notch removes
    return (rng.normal(0, 10, (n, N_CH)) + line + 200.0).astype(np.float32)


def test_live_filter_in_chunks_equals_offline():
    sos = design(RATE, [1.0, 40.0], notch=50.0)
    x = _raw(N).astype(np.float64)
    f = LiveFilter(sos, N_CH)
    cuts = [0, 1, 38, 39, 500, 1777, N]
    got = np.concatenate([f(x[a:b]) for a, b in itertools.pairwise(cuts)])
    np.testing.assert_array_equal(got, scipy.signal.sosfilt(sos, x, axis=0))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, [1, 40]), "regular stream"),
        ((RATE, [40, 1]), "low < high"),
        ((RATE, [1, 300]), "does not fit"),
        ((RATE, None, 300.0), "notch 300.0 Hz"),
        ((RATE,), "nothing to do"),
    ],
)
def test_design_refuses_bad_settings(args, match):
    with pytest.raises(ConfigError, match=match):
        design(*args)


def test_filter_worker_output_equals_offline_filter(procs):
    ns, started = procs
    sup = Sup(ns, f"{ns}-no-lsl")
    started.append(sup)
    sup.ready()
    raw_name, out = f"{ns}-raw", f"{ns}-bp"
    cfg = parse_toml(CONFIG.format(out=out))
    raw = _raw(N)
    ts = 50.0 + np.arange(N) / RATE
    with dpshm.publish_stream(raw_name, N_CH, RATE) as pub, collect_logs() as logs:
        with WorkerManager(cfg.workers, namespace=ns, grace_s=1.0, stop_timeout_s=3.0) as m:
            wid = m.start("bandpass", streams=[raw_name])
            entry = sup.entry(out, timeout=30)  # the worker attached its input, then published
            assert entry.producer_pid == m.get(wid)["pid"]
            with SharedStreamView(out) as view:
                assert view.n_channels == N_CH and view.srate == RATE
                assert view.meta["filter"]["input"] == raw_name
                for a in range(0, N, 37):  # chunks that do not divide the signal
                    pub.push_chunk(raw[a : a + 37], ts[a : a + 37])
                parts, stamps = [], []

                def all_filtered():
                    if view.wait(0.2):
                        d, t, lost = view.read_new()
                        assert lost == 0
                        parts.append(d)
                        stamps.append(t)
                    return sum(map(len, stamps)) >= N

                wait_until(all_filtered, 30)
            m.stop(wid)
        assert not [r for r in logs.records if r.levelno >= 40], logs.messages()
    got = np.concatenate(parts)
    offline = scipy.signal.sosfilt(design(RATE, [1.0, 40.0], notch=50.0), raw, axis=0)
    np.testing.assert_array_equal(np.concatenate(stamps), ts)  # the input's timestamps
    # float32 output of a float64 filter: equal to the offline result rounded to float32
    # (tolerance: 1e-6 of the signal's range, i.e. float32 rounding only)
    tol = 1e-6 * float(np.ptp(offline))
    np.testing.assert_allclose(got, offline.astype(np.float32), rtol=0, atol=tol)
    assert np.std(got[N // 2 :, 0]) < np.std(raw[N // 2 :, 0])  # it did filter


@pytest.mark.lsl
def test_demo_filter_publishes_the_filtered_signal(procs):
    ns, started = procs
    name = f"{ns}-mock"
    demo = Proc(
        ns,
        ["-m", "dpshm", "demo", "--filter", "--duration", "6", "--name", name,
         "--marker-name", f"{ns}-mk", "--rate", "250"],
    )  # fmt: skip
    started.append(demo)
    demo.saw(f"-> {name + '_filtered'!r}", 20)
    view = wait_until(lambda: _try_view(f"{name}_filtered"), 10)
    with view:
        assert view.srate == 250.0 and view.meta["filter"]["input"] == name
        wait_until(lambda: view.head > 100, 10)
        data, _ = view.get_window(n_samples=100, copy=True)
        assert np.isfinite(data).all() and np.ptp(data) > 0
    assert demo.finish(30) == 0, demo.output
    assert segments(ns) == []


def _try_view(name):
    try:
        return SharedStreamView(name)
    except LookupError:
        return None
