"""Tests of dpshm.dareplane.timing: sleep_s, sleep_until and the learned spin margin."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import dpshm
from dpshm.dareplane import timing
from dpshm.dareplane.timing import get_spin_margin, set_spin_quantile, sleep_s, sleep_until


@pytest.fixture
def fresh_estimator(monkeypatch: pytest.MonkeyPatch) -> timing._LatenessEstimator:
    """A private estimator, so tests do not disturb (or depend on) the global one."""
    est = timing._LatenessEstimator()
    monkeypatch.setattr(timing, "_ESTIMATOR", est)
    return est


def test_public_names() -> None:
    assert dpshm.sleep_s is sleep_s
    from dpshm.dareplane.eventloop import EventLoop

    assert dpshm.EventLoop is EventLoop


@pytest.mark.parametrize("spin_s", [None, 0.0, 0.0003])
def test_sleep_s_never_returns_early(spin_s: float | None) -> None:
    for s in (0.0001, 0.0006, 0.0015, 0.004):
        for _ in range(5):
            t = time.perf_counter()
            sleep_s(s, spin_s=spin_s)
            assert time.perf_counter() - t >= s


def test_sleep_until_reaches_deadline_and_past_deadline_returns() -> None:
    deadline = time.perf_counter() + 0.003
    assert sleep_until(deadline) is True
    assert time.perf_counter() >= deadline
    assert sleep_until(time.perf_counter() - 1.0) is True


def test_sleep_until_ends_early_on_stop_event() -> None:
    ev = threading.Event()
    setter = threading.Timer(0.05, ev.set)
    setter.start()
    try:
        t = time.perf_counter()
        assert sleep_until(t + 30.0, stop_event=ev) is False
        assert time.perf_counter() - t < 25.0  # ended by the event, not the deadline
    finally:
        setter.cancel()
        setter.join(5)


def test_sleep_s_nonpositive_returns() -> None:
    sleep_s(0)
    sleep_s(-1.0)  # as the original: negative means "already due"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"s": float("nan")}, "s=nan"),
        ({"s": float("inf")}, "s=inf; pass a finite number"),
        ({"s": 0.001, "spin_s": -1e-4}, "spin_s must be"),
        ({"s": 0.001, "spin_s": float("inf")}, "spin_s must be"),
    ],
)
def test_sleep_s_rejects_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sleep_s(**kwargs)


def test_sleep_s_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match=r"number of seconds, got '0\.1'"):
        sleep_s("0.1")


def test_sleep_until_rejects_bad_spin() -> None:
    with pytest.raises(ValueError, match="spin_s must be"):
        sleep_until(time.perf_counter(), spin_s=-1)


def test_sleep_s_nsteps_is_accepted_but_deprecated() -> None:
    with pytest.warns(DeprecationWarning, match="nsteps"):
        sleep_s(0.0006, nsteps=10)


def test_set_spin_quantile_validates(fresh_estimator: timing._LatenessEstimator) -> None:
    set_spin_quantile(0.95)
    assert fresh_estimator.quantile == 0.95
    for bad in (0.2, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"spin quantile must be in \[0.5, 0.999\]"):
            set_spin_quantile(bad)
    assert fresh_estimator.quantile == 0.95


def test_estimator_tracks_quantile_and_resists_outliers() -> None:
    rng = np.random.default_rng(7)
    est = timing._LatenessEstimator(quantile=0.9)
    b = est.bucket(0.001)
    lateness = rng.uniform(50e-6, 150e-6, 4000)
    for x in lateness:
        est.observe(b, float(x))
    # the 0.9 quantile of U(50, 150) µs is 140 µs
    assert est.margins[b] == pytest.approx(140e-6, rel=0.15)
    before = est.margins[b]
    est.observe(b, 0.5)  # one 500 ms stall moves the estimate by one step only
    assert est.margins[b] <= before * (1 + timing._LEARNING_RATE)
    # other duration buckets are untouched
    assert est.margins[est.bucket(0.010)] == timing._INITIAL_SPIN_S


def test_estimator_is_clamped() -> None:
    est = timing._LatenessEstimator(quantile=0.9)
    b = est.bucket(0.010)
    for _ in range(500):
        est.observe(b, 1.0)
    assert est.margins[b] == timing.MAX_SPIN_S
    for _ in range(5000):
        est.observe(b, 0.0)
    assert est.margins[b] == timing.MIN_SPIN_S


def test_buckets_keep_common_periods_off_boundaries() -> None:
    bucket = timing._LatenessEstimator.bucket
    for s in (0.001, 0.002, 0.005, 0.010, 0.020):
        assert bucket(s * 0.97) == bucket(s) == bucket(s * 1.03)
    assert bucket(0.0) == 0
    assert bucket(100.0) == timing._N_BUCKETS - 1


def test_real_sleeps_feed_the_estimator(fresh_estimator: timing._LatenessEstimator) -> None:
    assert get_spin_margin(0.002) == timing._INITIAL_SPIN_S
    for _ in range(30):
        sleep_s(0.002)
    margin = get_spin_margin(0.002)
    assert margin != timing._INITIAL_SPIN_S
    assert timing.MIN_SPIN_S <= margin <= timing.MAX_SPIN_S
    # a fixed spin margin bypasses the estimator
    before = list(fresh_estimator.margins)
    sleep_s(0.002, spin_s=0.0001)
    assert fresh_estimator.margins == before
