"""SharedStreamView waits (timeout=) and selects (type=, source_id=) like LSL users
expect: a real `dpshm up`, real LSL outlets on loopback."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import wait_until
from supervisor_util import Sup

from dpshm.errors import AmbiguousStreamError, NoSupervisorError, StreamNotFoundError
from dpshm.shm import registry
from dpshm.shm.view import SharedStreamView

pytestmark = pytest.mark.lsl


def test_timeout_waits_for_the_supervisor_and_the_stream(procs, outlets):
    ns, started = procs
    out = outlets.make(n_channels=3, srate=100.0)
    # the consumer starts first; the supervisor a moment later (as `dpshm up &` would)
    later = threading.Timer(0.3, lambda: started.append(Sup(ns, out.spec.name)))
    later.start()
    try:
        with SharedStreamView(out.spec.name, timeout=30) as view:
            assert started and view.n_channels == 3
            wait_until(out.have_consumers, 10)
            out.push_chunk(np.ones((5, 3), np.float32))
            got = []  # the supervisor may pull the chunk in more than one piece

            def all_five():
                if view.wait(0.5):
                    got.append(view.read_new()[0])
                return sum(len(d) for d in got) == 5

            wait_until(all_five, 10)
    finally:
        later.join(10)


def test_timeout_runs_out_with_the_same_clear_errors(procs, outlets):
    ns, started = procs
    t0 = time.monotonic()
    with pytest.raises(NoSupervisorError) as info:
        SharedStreamView("nothing-here", timeout=0.4)
    assert time.monotonic() - t0 >= 0.4  # it did wait
    msg = str(info.value)
    assert msg.startswith("after waiting 0.4 s:") and "dpshm up" in msg and "nothing-here" in msg
    with pytest.raises(NoSupervisorError, match="pass timeout=SECONDS"):
        SharedStreamView("nothing-here")  # default: looks once, says how to wait
    out = outlets.make()
    sup = Sup(ns, out.spec.name)
    started.append(sup)
    sup.entry(out.spec.name)
    with pytest.raises(StreamNotFoundError) as info:
        SharedStreamView("nope", timeout=0.3)
    msg = str(info.value)
    assert msg.startswith("after waiting 0.3 s: no stream 'nope'") and out.spec.name in msg


def test_select_by_type_and_source_id(procs, outlets):
    ns, started = procs
    eeg = outlets.make(type="EEG", n_channels=4)
    mk = outlets.make(type="Markers", n_channels=1, srate=0.0, channel_format="string")
    twin = outlets.make(name=eeg.spec.name, type="EMG", n_channels=2)  # same name
    sup = Sup(ns, eeg.spec.name, mk.spec.name)
    started.append(sup)
    wait_until(lambda: len(sup.ready().streams) == 3, 15)
    with SharedStreamView(type="Markers") as v:
        assert v.name == mk.spec.name and v.format == "string"
    with SharedStreamView(source_id=twin.spec.source_id) as v:
        assert v.n_channels == 2 and v.name == eeg.spec.name
    with SharedStreamView(eeg.spec.name, type="EEG") as v:
        assert v.n_channels == 4
    with SharedStreamView(type="EMG", source_id=twin.spec.source_id) as v:
        assert v.n_channels == 2
    t0 = time.monotonic()
    with pytest.raises(AmbiguousStreamError) as info:
        SharedStreamView(eeg.spec.name, timeout=60)  # waiting does not choose: at once
    assert time.monotonic() - t0 < 30
    msg = str(info.value)
    assert eeg.spec.source_id in msg and twin.spec.source_id in msg and "source_id=" in msg
    with pytest.raises(StreamNotFoundError, match="of type 'EMG' with source_id"):
        SharedStreamView(type="EMG", source_id=eeg.spec.source_id)
    assert registry.read_registry(ns).pid == sup.proc.pid


def test_bad_arguments():
    with pytest.raises(ValueError, match="needs a stream"):
        SharedStreamView()
    for bad in (-1, float("nan"), float("inf"), "5"):
        with pytest.raises(ValueError, match="timeout="):
            SharedStreamView("x", timeout=bad)
