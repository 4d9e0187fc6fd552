"""dpshm.list_streams() is what `dpshm ls --json` prints, and stream lookup follows
one rule (registry.find_stream) in the registry, the view and the supervisor's
START_WORKER resolution."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, wait_until
from supervisor_util import Sup, child_env

import dpshm
from dpshm.errors import AmbiguousStreamError, StreamNotFoundError, SupervisorNotRunningError
from dpshm.shm import registry

LIVE = {"head", "measured_rate", "lag_s", "updated"}  # figures that move between two reads


@pytest.mark.lsl
def test_list_streams_is_what_ls_json_shows(procs, outlets):
    ns, started = procs
    with pytest.raises(SupervisorNotRunningError, match="dpshm up"):
        dpshm.list_streams(ns)
    a = outlets.make(type="EEG", n_channels=3)
    b = outlets.make(type="Markers", n_channels=1, srate=0.0, channel_format="string")
    sup = Sup(ns, a.spec.name, b.spec.name)
    started.append(sup)
    wait_until(lambda: len(sup.ready().streams) == 2, 15)
    listed = dpshm.list_streams()  # the namespace from $DPSHM_NAMESPACE
    res = subprocess.run(
        [sys.executable, "-m", "dpshm", "ls", "--json"], capture_output=True, text=True,
        timeout=60, cwd=str(ROOT), env=child_env(ns),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert listed["namespace"] == shown["namespace"] == ns
    assert listed["pid"] == shown["pid"] == sup.proc.pid
    assert set(listed["streams"]) == set(shown["streams"]) and len(shown["streams"]) == 2
    for key in shown["streams"]:
        mine, theirs = listed["streams"][key], shown["streams"][key]
        assert set(mine) == set(theirs)
        assert {k: v for k, v in mine.items() if k not in LIVE} == {
            k: v for k, v in theirs.items() if k not in LIVE
        }
    by_name = {s["name"]: s for s in listed["streams"].values()}
    assert by_name[a.spec.name]["channels"] == 3 and by_name[a.spec.name]["type"] == "EEG"
    assert by_name[b.spec.name]["format"] == "string" and "head" in by_name[b.spec.name]


def test_list_streams_is_exported_lazily():
    code = (
        "import sys, dpshm; assert 'dpshm.shm.registry' not in sys.modules; "
        "f = dpshm.list_streams; assert 'dpshm.shm.registry' in sys.modules; "
        "assert 'list_streams' in dpshm.__all__ and f.__module__ == 'dpshm.shm.registry'"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr


def _entries():
    def e(key, name, type_, sid):
        return registry.entry_from_dict(
            key, {"name": name, "type": type_, "source_id": sid, "ring": f"ns.{key}.g1"}
        )

    return [
        e("eeg.1", "eeg", "EEG", "amp1"),
        e("eeg.2", "eeg", "EEG", "amp2"),
        e("emg.3", "emg", "EMG", "amp3"),
        e("mk.4", "markers", "Markers", "psychopy"),
    ]


def test_one_lookup_rule():
    es = _entries()

    def key(*args, **kw):
        return registry.find_stream(es, *args, **kw).key

    assert key("markers") == "mk.4"
    assert key(type="EMG") == "emg.3"
    assert key(source_id="amp2") == "eeg.2"
    assert key("eeg", source_id="amp1") == "eeg.1"
    assert key("eeg", type="EEG", source_id="amp2") == "eeg.2"
    assert key("eeg.2") == key("ns.eeg.2.g1") == key("amp2") == "eeg.2"  # key, ring, source_id
    with pytest.raises(AmbiguousStreamError) as info:
        registry.find_stream(es, type="EEG", where="here")
    msg = str(info.value)
    assert "2 streams match of type 'EEG' in here" in msg and "amp1" in msg and "amp2" in msg
    assert "source_id=..." in msg
    with pytest.raises(StreamNotFoundError) as info:
        registry.find_stream(es, "eeg", type="EMG")  # all given must match
    msg = str(info.value)
    assert "no stream 'eeg' of type 'EMG'" in msg and "emg (type 'EMG'" in msg
    with pytest.raises(StreamNotFoundError):
        registry.find_stream(es, "amp2", type="EEG")  # the fallbacks only for a bare name
    with pytest.raises(ValueError, match="name, type or source_id"):
        registry.find_stream(es)


def test_supervisor_commands_resolve_with_the_same_rule():
    """START_WORKER's stream names resolve exactly as a view's (same hits, same errors)."""
    from dpshm.control.commands import SupervisorFrontend

    class _Status:  # what SupervisorFrontend.resolve reads: streams_status()
        streams_status = SupervisorFrontend.streams_status
        resolve = SupervisorFrontend.resolve

        def __init__(self, entries):
            self._sup = self
            self.entries = entries

        def status(self):
            return {"streams": {e.key: dict(e.info) for e in self.entries}}

    fe = _Status(_entries())
    reg = registry.Registry("ns", 1, None, {}, {e.key: e for e in _entries()}, {})
    for ask in ("markers", "emg", "amp2", "eeg.1", "ns.mk.4.g1"):
        assert fe.resolve(ask) == reg.find(ask).key
    for ask, err in (("eeg", AmbiguousStreamError), ("nope", StreamNotFoundError)):
        with pytest.raises(err) as a:
            fe.resolve(ask)
        with pytest.raises(err) as b:
            reg.find(ask)
        assert str(a.value).split(" in ")[0] == str(b.value).split(" in ")[0]
