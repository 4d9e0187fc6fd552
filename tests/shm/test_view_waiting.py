"""SharedStreamView waits (timeout=) and selects (type=, source_id=) like LSL users
expect: a real in-process supervisor, real LSL outlets on loopback."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import supervisor_in_process, wait_until

from dpshm.errors import AmbiguousStreamError, NoSupervisorError, StreamNotFoundError
from dpshm.shm import registry
from dpshm.shm.view import SharedStreamView

pytestmark = pytest.mark.lsl


def test_timeout_waits_for_the_supervisor_and_the_stream(ns, outlets):
    out = outlets.make(n_channels=3, srate=100.0)
    name = out.spec.name
    started = threading.Event()
    stop = threading.Event()

    def supervise_later():
        time.sleep(0.3)  # the consumer is already waiting (it starts with the supervisor)
        with supervisor_in_process(ns, name):
            started.set()
            stop.wait(30)

    t = threading.Thread(target=supervise_later, daemon=True)
    t.start()
    try:
        with SharedStreamView(name, timeout=20) as view:
            assert started.is_set() and view.n_channels == 3
            wait_until(out.have_consumers, 10)
            out.push_chunk(np.ones((5, 3), np.float32))
            assert view.wait(5) and len(view.read_new()[0]) == 5
    finally:
        stop.set()
        t.join(15)


def test_timeout_runs_out_with_the_same_clear_errors(ns, outlets):
    t0 = time.monotonic()
    with pytest.raises(NoSupervisorError) as info:
        SharedStreamView("nothing-here", timeout=0.4)
    assert time.monotonic() - t0 >= 0.4  # it did wait
    msg = str(info.value)
    assert msg.startswith("after waiting 0.4 s:") and "dpshm up" in msg and "nothing-here" in msg
    with pytest.raises(NoSupervisorError, match="pass timeout=SECONDS"):
        SharedStreamView("nothing-here")  # default: looks once, says how to wait
    out = outlets.make()
    with supervisor_in_process(ns, out.spec.name):
        wait_until(lambda: registry.read_registry(ns).streams, 10)
        with pytest.raises(StreamNotFoundError) as info:
            SharedStreamView("nope", timeout=0.3)
        msg = str(info.value)
        assert msg.startswith("after waiting 0.3 s: no stream 'nope'") and out.spec.name in msg


def test_select_by_type_and_source_id(ns, outlets):
    eeg = outlets.make(type="EEG", n_channels=4)
    mk = outlets.make(type="Markers", n_channels=1, srate=0.0, channel_format="string")
    twin = outlets.make(name=eeg.spec.name, type="EMG", n_channels=2)  # same name
    names = {eeg.spec.name, mk.spec.name}
    with supervisor_in_process(ns, *names):
        wait_until(lambda: len(registry.read_registry(ns).streams) == 3, 15)
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


def test_bad_arguments(ns):
    with pytest.raises(ValueError, match="needs a stream"):
        SharedStreamView()
    for bad in (-1, float("nan"), float("inf"), "5"):
        with pytest.raises(ValueError, match="timeout="):
            SharedStreamView("x", timeout=bad)
