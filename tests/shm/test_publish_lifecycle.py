"""A published stream's life: producer SIGKILLed and restarted, a changed format,
names held by other streams, a supervisor restarted under a live producer."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, wait_until
from supervisor_util import Proc, Sup, child_env, segments

import dpshm
from dpshm import lsl
from dpshm.errors import StreamNameTakenError
from dpshm.shm.view import SharedStreamView

pytestmark = pytest.mark.lsl

# publishes `n` samples of value `base + i` (n_ch channels) at once, then waits to be killed
PRODUCER = r"""
import sys, time
import numpy as np
import dpshm
name, n_ch, base, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
pub = dpshm.publish_stream(name, n_ch, 100.0)
v = base + np.arange(n, dtype=np.float64)
pub.push_chunk(np.repeat(v[:, None], n_ch, axis=1), timestamps=v)
print("pushed", pub.ring.name, pub.generation, flush=True)
time.sleep(60)
"""


def _read(view: SharedStreamView, n: int, timeout: float = 10.0) -> np.ndarray:
    out: list[np.ndarray] = []

    def enough():
        if view.wait(0.2):
            out.append(view.read_new()[0])
        return sum(len(d) for d in out) >= n

    wait_until(enough, timeout)
    return np.concatenate(out)


def _ring_exists(ring: str) -> bool:
    return Path(f"/dev/shm/dpshm_{ring}").exists()


def test_producer_killed_restarted_and_reformatted(procs):
    ns, started = procs
    name = f"{ns}-filt"
    sup = Sup(ns, f"{ns}-no-lsl")
    started.append(sup)
    sup.ready()

    def producer(n_ch: int, base: float, n: int) -> tuple[Proc, str]:
        p = Proc(ns, ["-c", PRODUCER, name, str(n_ch), str(base), str(n)])
        started.append(p)
        ring = p.saw("pushed", 20).split("pushed ")[1].split()[0]
        return p, ring

    first, ring1 = producer(2, 0.0, 10)
    entry = sup.entry(name, lambda e: e.ring == ring1)
    with SharedStreamView(name) as view:
        assert view.generation == entry.generation == 1 and view.head == 10
        # SIGKILL: stale for the attached view, the supervisor unlinks the dead ring
        first.stop(signal.SIGKILL)
        sup.entry(name, lambda e: e.stale)
        wait_until(lambda: view.stale, 5)
        wait_until(lambda: not _ring_exists(ring1), 5)
        assert view.head == 10  # the reader keeps its mapping

        # the same name and format again: same key and generation, the view follows
        second, ring2 = producer(2, 100.0, 20)
        assert ring2 != ring1
        e2 = sup.entry(name, lambda e: e.ring == ring2 and not e.stale)
        assert e2.key == entry.key and e2.generation == entry.generation
        got = _read(view, 20)
        np.testing.assert_array_equal(got[:, 0], 100.0 + np.arange(20))
        assert not view.stale and view.ring.name == ring2

        # another format (3 channels): next generation, the view follows
        second.stop(signal.SIGKILL)
        sup.entry(name, lambda e: e.stale)
        third, ring3 = producer(3, 500.0, 5)
        e3 = sup.entry(name, lambda e: e.ring == ring3 and not e.stale)
        assert e3.key == entry.key and e3.generation == entry.generation + 1
        got = _read(view, 5)
        assert view.n_channels == 3 and view.generation == e3.generation
        np.testing.assert_array_equal(got, np.repeat(500.0 + np.arange(5)[:, None], 3, axis=1))
        wait_until(lambda: not _ring_exists(ring2), 5)

        # a supervisor restart under the live producer: it registers its ring again
        assert sup.stop() == 0, sup.output
        assert _ring_exists(ring3)  # a live producer's ring is never the supervisor's
        sup2 = Sup(ns, f"{ns}-no-lsl")
        started.append(sup2)
        sup2.ready()
        assert _ring_exists(ring3), sup2.output  # not swept: its writer lives
        e4 = sup2.entry(name, lambda e: e.ring == ring3, timeout=10)
        assert e4.producer_pid == third.proc.pid and not e4.stale

    # dpshm down with a dead producer: nothing of the namespace is left
    third.stop(signal.SIGKILL)
    down = subprocess.run(
        [sys.executable, "-m", "dpshm", "down"], env=child_env(ns), capture_output=True,
        text=True, timeout=60, cwd=str(ROOT),
    )  # fmt: skip
    assert down.returncode == 0, down.stdout + down.stderr
    wait_until(lambda: sup2.proc.poll() is not None, 15)
    assert segments(ns) == []


def test_name_held_by_an_lsl_stream_is_refused(procs):
    ns, started = procs
    name = f"{ns}-amp"
    with lsl.Outlet(name, "EEG", 2, 100.0, source_id=f"{name}-sid") as outlet:
        sup = Sup(ns, name)
        started.append(sup)
        sup.ready()
        sup.entry(name)  # the supervisor feeds it from LSL
        wait_until(outlet.have_consumers, 10)
        with pytest.raises(StreamNameTakenError, match=f"LSL stream {name!r}"):
            dpshm.publish_stream(name, 2, 100.0)
    assert sup.stop() == 0, sup.output


def test_next_up_removes_what_killed_producer_and_supervisor_left(procs):
    ns, started = procs
    name = f"{ns}-gone"
    sup = Sup(ns, f"{ns}-no-lsl")
    started.append(sup)
    sup.ready()
    prod = Proc(ns, ["-c", PRODUCER, name, "2", "0", "10"])
    started.append(prod)
    ring = prod.saw("pushed", 20).split("pushed ")[1].split()[0]
    sup.entry(name, lambda e: e.ring == ring)
    sup.stop(signal.SIGKILL)  # neither can clean up now
    prod.stop(signal.SIGKILL)
    assert _ring_exists(ring)
    sup2 = Sup(ns, f"{ns}-no-lsl")
    started.append(sup2)
    sup2.ready()
    assert not _ring_exists(ring) and segments(ns) == []
    assert f"left by a dead publishing process (pid {prod.proc.pid})" in sup2.saw("removed", 10)
