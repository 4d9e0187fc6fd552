"""Where streams come from: `dpshm ls` shows host and source_id, notes a name that
several streams share, the startup line names both, and a second outlet claiming a
stream identity that is already taken is logged."""

from __future__ import annotations

import socket
import time

import pytest
from cli_util import run_dpshm
from helpers import wait_until
from supervisor_util import Sup

from dpshm.shm import registry

pytestmark = pytest.mark.lsl


def test_ls_shows_host_and_source_id_and_notes_a_shared_name(procs, outlets):
    ns, started = procs
    name = f"{ns}-eeg"
    outlets.make(name=name, n_channels=2, srate=100.0, source_id=f"{name}-amp1")
    outlets.make(name=name, n_channels=4, srate=100.0, source_id=f"{name}-amp2")
    sup = Sup(ns, name)
    started.append(sup)
    host = socket.gethostname()
    for sid in (f"{name}-amp1", f"{name}-amp2"):  # the startup line says where it comes from
        sup.saw(f"from host {host!r}, source_id {sid!r} -> ring", 15)
    sup.entry(name, lambda e: e.source_id == f"{name}-amp1")
    sup.entry(name, lambda e: e.source_id == f"{name}-amp2")
    ls = run_dpshm(ns, "ls")
    assert ls.returncode == 0, ls.stderr
    lines = ls.stdout.splitlines()
    header = lines[1].split()
    assert header[-3:] == ["host", "source_id", "state"], lines[1]
    rows = [line.split() for line in lines if line.startswith(name + " ")]
    assert sorted(r[-2] for r in rows) == [f"{name}-amp1", f"{name}-amp2"], ls.stdout
    assert all(r[-3] == host and r[-1] == "ok" for r in rows), ls.stdout
    note = [line for line in lines if line.startswith("note: ")]
    assert len(note) == 1 and f"2 streams are named {name!r}" in note[0], ls.stdout
    assert f"{name}-amp1" in note[0] and "source_id=..." in note[0]


def test_a_second_outlet_with_a_taken_source_id_is_logged(procs, outlets):
    ns, started = procs
    name, sid = f"{ns}-eeg", f"{ns}-amp"
    first = outlets.make(name=name, n_channels=2, srate=100.0, source_id=sid)
    sup = Sup(ns, name)
    started.append(sup)
    sup.entry(name)
    wait_until(first.have_consumers, 10)
    outlets.make(name=name, n_channels=2, srate=100.0, source_id=sid)  # the same identity
    out = sup.saw("claim the same identity", 15)
    # let the resolver (every 0.3 s) see both outlets a few more rounds: status.json is
    # rewritten each second, so two rewrites after the warning mean >= 3 more rounds
    after = time.time() + 1.0
    wait_until(lambda: (registry.read_status(ns) or {}).get("updated", 0) > after + 1, 10)
    assert sup.stop() == 0
    warning = next(line for line in sup.output.splitlines() if "claim the same identity" in line)
    assert " WARNING " in warning and name in warning and f"source_id {sid!r}" in warning
    assert "its own source_id" in warning
    # logged once per pair of outlets, not once per resolve round
    assert sup.output.count("claim the same identity") == 1, out
