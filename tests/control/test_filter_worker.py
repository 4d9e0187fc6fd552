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
from dpshm.control.filter_worker import BankFilter, LiveFilter, _stage, design
from dpshm.control.workers import WorkerManager
from dpshm.dareplane.filterbank import FilterBank
from dpshm.errors import ConfigError
from dpshm.shm.view import SharedStreamView

N_CH, RATE, N = 4, 500.0, 5000

CONFIG = """
[workers.bandpass]
target = "dpshm.control.filter_worker:run"
mode = "process"
kwargs = {{ out = "{out}", band = [1.0, 40.0], notch = 50.0, order = 4 }}
"""

BANDS = {"alpha": [8.0, 12.0], "beta": [13.0, 30.0], "gamma": [31.0, 45.0]}
BANK_CONFIG = """
[workers.bank]
target = "dpshm.control.filter_worker:run"
mode = "process"

[workers.bank.kwargs]
out = "{out}"
bands = {{ alpha = [8.0, 12.0], beta = [13.0, 30.0], gamma = [31.0, 45.0] }}
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


def _through_worker(procs, config: str, n_out: int):
    """Publish ``_raw(N)`` in 37-row chunks through the worker ``config`` declares.

    Returns what the worker published (data, timestamps), its input's timestamps
    and the output view's channel names and metadata.
    """
    ns, started = procs
    sup = Sup(ns, f"{ns}-no-lsl")
    started.append(sup)
    sup.ready()
    raw_name, out = f"{ns}-raw", f"{ns}-out"
    cfg = parse_toml(config.format(out=out))
    (worker,) = cfg.workers
    raw = _raw(N)
    ts = 50.0 + np.arange(N) / RATE
    with dpshm.publish_stream(raw_name, N_CH, RATE) as pub, collect_logs() as logs:
        with WorkerManager(cfg.workers, namespace=ns, grace_s=1.0, stop_timeout_s=3.0) as m:
            wid = m.start(worker, streams=[raw_name])
            entry = sup.entry(out, timeout=30)  # the worker attached its input, then published
            assert entry.producer_pid == m.get(wid)["pid"]
            with SharedStreamView(out) as view:
                assert view.n_channels == n_out and view.srate == RATE
                assert view.meta["filter"]["input"] == raw_name
                names, meta = list(view.channel_names), view.meta["filter"]
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
    np.testing.assert_array_equal(np.concatenate(stamps), ts)  # the input's timestamps
    return raw, np.concatenate(parts), ts, names, meta


def test_filter_worker_output_equals_offline_filter(procs):
    raw, got, _, _, _ = _through_worker(procs, CONFIG, N_CH)
    offline = scipy.signal.sosfilt(design(RATE, [1.0, 40.0], notch=50.0), raw, axis=0)
    # float32 output of a float64 filter: equal to the offline result rounded to float32
    # (tolerance: 1e-6 of the signal's range, i.e. float32 rounding only)
    tol = 1e-6 * float(np.ptp(offline))
    np.testing.assert_allclose(got, offline.astype(np.float32), rtol=0, atol=tol)
    assert np.std(got[N // 2 :, 0]) < np.std(raw[N // 2 :, 0])  # it did filter


def _offline_bank(raw, ts, output="signal", **kw):
    """The FilterBank run once over the whole signal: ``(N, N_CH, n_bands)``."""
    fb = FilterBank(BANDS, sfreq=RATE, n_in_channels=N_CH, output=output,
                    filter_buffer_s=len(raw) / RATE + 1, **kw)  # fmt: skip
    fb.filter(raw, ts)
    return fb.get_data()


def test_filter_worker_runs_the_filterbank(procs):
    raw, got, ts, names, meta = _through_worker(procs, BANK_CONFIG, N_CH * len(BANDS))
    offline = _offline_bank(raw, ts)
    # channel-major: column c * n_bands + b is channel c in band b, named "<ch>_<band>"
    np.testing.assert_array_equal(got.reshape(N, N_CH, len(BANDS)), offline)
    assert names == [f"ch_{c + 1}_{b}" for c in range(N_CH) for b in BANDS]
    assert meta["bands"] == BANDS and meta["order"] == 8 and meta["output"] == "signal"
    assert np.std(got[N // 2 :, 0]) < np.std(raw[N // 2 :, 0])  # it did filter


@pytest.mark.parametrize("output", ["signal", "abs_ma", "square"])
def test_bank_filter_in_chunks_equals_offline_filterbank(output):
    raw = _raw(N)
    ts = np.arange(N) / RATE
    bank = BankFilter(BANDS, RATE, N_CH, order=8, output=output)
    cuts = [0, 1, 3, 300, 301, 1777, N]  # pieces shorter and longer than BANK_PIECE
    got = np.concatenate([bank(raw[a:b], ts[a:b]) for a, b in itertools.pairwise(cuts)])
    assert got.dtype == np.float32 and got.shape == (N, N_CH * len(BANDS))
    offline = _offline_bank(raw, ts, output)
    np.testing.assert_array_equal(got.reshape(N, N_CH, len(BANDS)), offline)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"bands": BANDS, "band": [1.0, 40.0]}, "either a band-pass/notch"),
        ({"bands": BANDS, "notch": 50.0}, "either a band-pass/notch"),
        ({"bands": {"x": [40.0, 1.0]}}, "band 'x'"),
        ({"bands": {"x": [8.0, 300.0]}}, "band 'x'"),
        ({"bands": {}}, "bands must be a table"),
        ({"bands": BANDS, "output": "power"}, "Unknown output 'power'"),
        ({"bands": BANDS, "n_lookback": 0}, "n_lookback"),
    ],
)
def test_filter_worker_refuses_bad_bank_settings(kw, match):
    args = dict(band=None, notch=None, order=None, notch_q=30.0, bands=None, output="signal",
                n_lookback=5)  # fmt: skip
    with pytest.raises(ConfigError, match=match):
        _stage(RATE, [f"ch_{i}" for i in range(N_CH)], **{**args, **kw})


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
