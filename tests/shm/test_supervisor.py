"""The supervisor as a real subprocess, real LSL outlets on loopback, consumers in
other processes. Each test runs on its own namespace with unique stream names."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, wait_until
from supervisor_util import READER, Proc, Sup, child_env, segments

from dpshm import lsl
from dpshm.errors import AmbiguousStreamError, NoSupervisorError, StreamNotFoundError
from dpshm.shm import doorbell, registry
from dpshm.shm.view import SharedStreamView

pytestmark = pytest.mark.lsl


def _outlet(name: str, n_ch: int = 2, srate: float = 500.0, source_id: str | None = None):
    return lsl.Outlet(name, "Test", n_ch, srate, "float32", source_id=source_id or f"{name}-sid")


def _push_sequence(outlet, start: int, n: int, n_ch: int, srate: float, t0: float, chunk=50):
    """Push samples ``start .. start+n-1``: channel c of sample i holds ``(c+1) * i``
    (negated for odd c); sample i is stamped ``t0 + i / srate``."""
    for a in range(start, start + n, chunk):
        idx = np.arange(a, min(a + chunk, start + n))
        data = _expected(idx, n_ch)
        outlet.push_chunk(data, timestamp=t0 + idx[-1] / srate)


def _expected(idx: np.ndarray, n_ch: int) -> np.ndarray:
    sign = np.where(np.arange(n_ch) % 2, -1.0, 1.0)
    return (idx[:, None] * (np.arange(n_ch) + 1) * sign).astype(np.float32)


def test_end_to_end_two_consumer_processes(procs, unique_name, tmp_path):
    ns, started = procs
    name, n_ch, srate, n = f"{unique_name}-eeg", 3, 500.0, 3000
    outlet = _outlet(name, n_ch, srate)
    try:
        sup = Sup(ns, name)
        started.append(sup)
        sup.ready()
        entry = sup.entry(name)
        assert entry.info["channels"] == n_ch and entry.info["srate"] == srate
        wait_until(lambda: outlet.have_consumers(), 10)
        consumers = []
        for i in range(2):
            c = Proc(ns, ["-c", READER, name, str(n), str(tmp_path / f"c{i}.npz")])
            started.append(c)
            consumers.append(c)
        for c in consumers:
            c.saw("ready", 15)
        # an unknown name: the error lists what the supervisor shares
        with pytest.raises(StreamNotFoundError) as info:
            SharedStreamView(f"{unique_name}-nope")
        assert f"{unique_name}-nope" in str(info.value) and name in str(info.value)
        # a second outlet of the same name: the name alone is ambiguous, source_id decides
        with _outlet(name, 1, 10.0, source_id=f"{name}-other") as twin:
            sup.entry(name, lambda e: e.source_id == twin.spec.source_id)
            with pytest.raises(AmbiguousStreamError) as info:
                SharedStreamView(name)
            assert f"{name}-sid" in str(info.value) and f"{name}-other" in str(info.value)
            with SharedStreamView(name, source_id=f"{name}-other") as v:
                assert v.n_channels == 1
        tail = Proc(ns, ["-m", "dpshm", "tail", name, "--source-id", f"{name}-sid",
                         "--duration", "20"])  # fmt: skip
        started.append(tail)
        tail.saw(f"{name}: {n_ch} ch float32", 15)
        t0 = lsl.local_clock()
        _push_sequence(outlet, 0, n, n_ch, srate, t0)
        for c in consumers:
            c.saw("done", 30)
            assert c.finish() == 0, c.output
        # tail printed the newest sample of the last chunk: 2999, -5998, 8997
        last = tail.saw(f"{3 * (n - 1)}.", 10).splitlines()[-1]
        assert f"{n - 1}." in last and f"-{2 * (n - 1)}." in last
        tail.stop()
        for i in range(2):
            res = np.load(tmp_path / f"c{i}.npz")
            assert int(res["lost"]) == 0
            np.testing.assert_array_equal(res["data"], _expected(np.arange(n), n_ch))
            np.testing.assert_allclose(res["ts"], t0 + np.arange(n) / srate, rtol=0, atol=1e-6)
        # dpshm ls shows the stream with its head
        ls = subprocess.run(
            [sys.executable, "-m", "dpshm", "ls"], env=child_env(ns), capture_output=True,
            text=True, timeout=30, cwd=str(ROOT),
        )  # fmt: skip
        assert ls.returncode == 0, ls.stderr
        assert name in ls.stdout and str(n) in ls.stdout
        ring = entry.ring
        assert Path(f"/dev/shm/dpshm_{ring}").exists()
        assert sup.stop() == 0, sup.output
        assert segments(ns) == []
        assert registry.read_registry_raw(ns) is None
    finally:
        outlet.close()


SLEEPER = r"""
import sys, time
from dpshm.shm.view import SharedStreamView
v = SharedStreamView(sys.argv[1])
print("attached", flush=True)
time.sleep(60)
"""


def test_outlet_gone_back_and_reformatted_consumer_killed(procs, unique_name):
    ns, started = procs
    name, srate = f"{unique_name}-amp", 200.0
    sid = f"{unique_name}-sid"
    sup = Sup(ns, name)
    started.append(sup)
    outlet = _outlet(name, 2, srate, sid)
    try:
        entry = sup.entry(name)
        logs = Proc(ns, ["-m", "dpshm", "logs", "--duration", "30"])  # follows the log stream
        started.append(logs)
        logs.saw("following", 15)
        wait_until(lambda: outlet.have_consumers(), 10)
        with SharedStreamView(name) as view:
            # a consumer killed with SIGKILL: nothing else notices
            victim = Proc(ns, ["-c", SLEEPER, name])
            started.append(victim)
            victim.saw("attached", 15)
            victim.stop(signal.SIGKILL)
            t0 = lsl.local_clock()
            _push_sequence(outlet, 0, 100, 2, srate, t0)
            got = _read(view, 100)
            np.testing.assert_array_equal(got, _expected(np.arange(100), 2))
            # the inlet's time correction is published (same host: about 0)
            assert abs(view.time_offset) < 0.01
            assert abs(sup.entry(name).info["time_offset"]) < 0.01
            assert Path(f"/dev/shm/dpshm_{entry.ring}").exists()

            # the outlet disappears: stale, ring kept
            outlet.close()
            sup.entry(name, lambda e: e.stale)
            assert view.stale and Path(f"/dev/shm/dpshm_{entry.ring}").exists()

            # ... and returns with the same source_id and format: same ring, resumes
            outlet = _outlet(name, 2, srate, sid)
            sup.entry(name, lambda e: not e.stale)
            wait_until(lambda: outlet.have_consumers(), 10)
            _push_sequence(outlet, 100, 50, 2, srate, t0)
            got = _read(view, 50)
            np.testing.assert_array_equal(got, _expected(np.arange(100, 150), 2))
            assert view.generation == entry.generation and not view.stale

            # ... and returns with another channel count: new generation, view follows
            outlet.close()
            sup.entry(name, lambda e: e.stale)
            outlet = _outlet(name, 3, srate, sid)
            new = sup.entry(name, lambda e: e.generation == entry.generation + 1 and not e.stale)
            assert new.ring != entry.ring and new.info["channels"] == 3
            wait_until(lambda: outlet.have_consumers(), 10)
            _push_sequence(outlet, 0, 40, 3, srate, t0)
            got = _read(view, 40)
            assert view.n_channels == 3 and view.generation == new.generation
            np.testing.assert_array_equal(got, _expected(np.arange(40), 3))
            wait_until(lambda: not Path(f"/dev/shm/dpshm_{entry.ring}").exists(), 5)
        assert sup.stop() == 0, sup.output
        assert "changed format" in sup.output and "is stale" in sup.output
        logs.saw("changed format", 10)  # the same record, through ZeroMQ
        assert "WARNING dpshm.shm.feed: stream" in logs.output
    finally:
        outlet.close()


def _read(view: SharedStreamView, n: int, timeout: float = 10.0) -> np.ndarray:
    parts: list[np.ndarray] = []

    def enough():
        if view.wait(0.5):
            d, _, lost = view.read_new()
            assert lost == 0
            parts.append(d)
        return sum(len(p) for p in parts) >= n

    wait_until(enough, timeout)
    return np.concatenate(parts)


def test_quiet_marker_stream_stays_live(procs, unique_name, outlets):
    """A marker outlet that sends nothing for a while is still there: never stale."""
    ns, started = procs
    name = f"{unique_name}-quiet"
    outlets.make(name=name, type="Markers", n_channels=1, srate=0.0, channel_format="string")
    sup = Sup(ns, name)  # resolve interval 0.3 s: ten resolve rounds in the window below
    started.append(sup)
    sup.entry(name)
    deadline = time.monotonic() + 3.0  # observed, not waited for: it must not happen
    while time.monotonic() < deadline:
        assert not sup.entry(name).stale, sup.output
        time.sleep(0.1)  # the observation's sampling period
    assert "is stale" not in sup.output


def test_supervisor_killed_and_restarted(procs, unique_name, caplog):
    ns, started = procs
    caplog.set_level(logging.WARNING, logger="dpshm")
    name, srate = f"{unique_name}-x", 100.0
    outlet = _outlet(name, 2, srate)
    try:
        sup = Sup(ns, name)
        started.append(sup)
        old = sup.entry(name)
        # a second supervisor on the same namespace refuses and says why
        second = Sup(ns, name)
        started.append(second)
        assert second.finish(20) == 1
        assert "already runs" in second.output and str(sup.proc.pid) in second.output
        wait_until(lambda: outlet.have_consumers(), 10)
        t0 = lsl.local_clock()
        with SharedStreamView(name) as view:
            _push_sequence(outlet, 0, 20, 2, srate, t0)
            np.testing.assert_array_equal(_read(view, 20), _expected(np.arange(20), 2))
            first_bell = view._link._sub

            sup.stop(signal.SIGKILL)
            killed_at = time.time()
            assert Path(f"/dev/shm/dpshm_{old.ring}").exists()  # left behind
            assert not view.wait(0.05)
            # its registry stays, but the waiting view sees the process gone and says so
            wait_until(lambda: not view.wait(0.3) and "is gone" in caplog.text, 10)

            sup2 = Sup(ns, name)
            started.append(sup2)
            sup2.ready()
            assert not Path(f"/dev/shm/dpshm_{old.ring}").exists()  # cleaned at start
            out = sup2.saw("removed shared-memory segment")
            assert f"left by a dead supervisor (pid {sup.proc.pid})" in out
            new = sup2.entry(name)
            assert new.ring != old.ring and new.generation > old.generation
            wait_until(lambda: outlet.have_consumers(), 10)
            _push_sequence(outlet, 20, 30, 2, srate, t0)
            # the view re-attaches by itself and reads the samples of the new ring
            np.testing.assert_array_equal(_read(view, 30), _expected(np.arange(20, 50), 2))
            assert view.generation == new.generation
            # it says it re-attached after a restart; nothing was sent meanwhile: none missed
            assert view.reattached == 1 and view.gaps[0].reason == "supervisor restarted"
            assert view.gaps[0].missed == 0 and view.lost_samples == 0
            assert view.gaps[0].since >= killed_at  # from when the view saw it gone
            if doorbell.AVAILABLE:  # the view woke on the new supervisor's doorbell
                bell = view._link._sub
                assert bell is not first_bell
                assert isinstance(bell, doorbell.Doorbell) and bell.subscribed
                assert bell.address == registry.read_registry(ns).endpoints["doorbell"]

        down = subprocess.run(
            [sys.executable, "-m", "dpshm", "down"], env=child_env(ns), capture_output=True,
            text=True, timeout=30, cwd=str(ROOT),
        )  # fmt: skip
        assert down.returncode == 0, down.stderr
        assert sup2.proc.wait(10) == 0
        assert segments(ns) == []
    finally:
        outlet.close()


def _down(ns: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dpshm", "down"], env=child_env(ns), capture_output=True, text=True,
        timeout=30, cwd=str(ROOT),
    )  # fmt: skip


def test_down_after_sigkill_removes_leftovers(procs, unique_name):
    ns, started = procs
    name = f"{unique_name}-k"
    outlet = _outlet(name, 4, 200.0)
    try:
        sup = Sup(ns, name)
        started.append(sup)
        entry = sup.entry(name)
        sup.stop(signal.SIGKILL)
        assert segments(ns) == [f"dpshm_{entry.ring}"]  # left behind
        # another process holds the namespace lock (a supervisor starting): hands off
        with registry.SupervisorLock(ns):
            busy = _down(ns)
        assert busy.returncode == 1 and "already runs" in busy.stderr, busy.stderr
        assert "run `dpshm down` again" in busy.stderr and segments(ns) == [f"dpshm_{entry.ring}"]
        res = _down(ns)
        assert res.returncode == 0, res.stderr
        assert f"removed what a killed one (pid {sup.proc.pid}) left: 1 shared-memory" in res.stdout
        assert "and its registry" in res.stdout
        assert segments(ns) == [] and registry.read_registry_raw(ns) is None
        again = _down(ns)  # nothing runs and nothing is left: nothing to stop, not an error
        assert again.returncode == 0 and "nothing to stop" in again.stdout, again.stderr
    finally:
        outlet.close()


def test_no_supervisor_and_bad_config(procs, tmp_path):
    ns, _ = procs
    with pytest.raises(NoSupervisorError) as info:
        SharedStreamView("nothing-here")
    assert "dpshm up" in str(info.value) and "nothing-here" in str(info.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[supervisor]\nbuffer_s = 2\n\n[[streams]]\nname = 'eeg'\nbufer_s = 3\n")
    res = subprocess.run(
        [sys.executable, "-m", "dpshm", "up", "--config", str(bad)], env=child_env(ns),
        capture_output=True, text=True, timeout=30, cwd=str(ROOT),
    )  # fmt: skip
    assert res.returncode == 1
    assert "line 6" in res.stderr and "streams[0].bufer_s" in res.stderr, res.stderr
    ls = subprocess.run(
        [sys.executable, "-m", "dpshm", "ls"], env=child_env(ns), capture_output=True, text=True,
        timeout=30, cwd=str(ROOT),
    )  # fmt: skip
    assert ls.returncode == 1 and "no dpshm supervisor runs" in ls.stderr


def test_demo_one_command(procs, unique_name):
    """The README's main command: mock outlets + supervisor + a consumer, ends by itself."""
    ns, _ = procs
    res = subprocess.run(
        [sys.executable, "-m", "dpshm", "demo", "--duration", "4", "--name",
         f"{unique_name}-mock", "--marker-name", f"{unique_name}-mk", "--rate", "200"],
        env=child_env(ns), capture_output=True, text=True, timeout=60, cwd=str(ROOT),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    done = res.stdout.strip().splitlines()[-1]
    read = int(done.split("; ")[-1].split(" read")[0])
    assert read > 100 and done.endswith(" 0 lost."), res.stdout
    assert segments(ns) == []
