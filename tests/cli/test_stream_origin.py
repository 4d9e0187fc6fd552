"""Where streams come from: `dpshm ls` shows host and source_id, notes a name that
several streams share, the startup line names both, and a second outlet claiming a
stream identity that is already taken is logged."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from cli_util import run_dpshm, shared, supervisor
from helpers import wait_until

from dpshm.shm import registry

pytestmark = pytest.mark.lsl


def test_ls_shows_host_and_source_id_and_notes_a_shared_name(unique_name, outlets, caplog):
    caplog.set_level(logging.INFO, logger="dpshm")
    name = f"{unique_name}-eeg"
    outlets.make(name=name, n_channels=2, srate=100.0, source_id=f"{name}-amp1")
    outlets.make(name=name, n_channels=4, srate=100.0, source_id=f"{name}-amp2")
    with supervisor(unique_name, name):
        wait_until(
            lambda: caplog.text.count(f"stream '{name}' (EEG") == 2, 15
        )  # the startup line of each says where it comes from
        host = socket.gethostname()
        for sid in (f"{name}-amp1", f"{name}-amp2"):
            assert f"from host {host!r}, source_id {sid!r} -> ring" in caplog.text
        shared(unique_name, name)
        ls = run_dpshm(unique_name, "ls")
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


def test_a_second_outlet_with_a_taken_source_id_is_logged(unique_name, outlets, caplog):
    caplog.set_level(logging.INFO, logger="dpshm")
    name, sid = f"{unique_name}-eeg", f"{unique_name}-amp"
    first = outlets.make(name=name, n_channels=2, srate=100.0, source_id=sid)
    with supervisor(unique_name, name):
        shared(unique_name, name)
        wait_until(first.have_consumers, 10)
        outlets.make(name=name, n_channels=2, srate=100.0, source_id=sid)  # same identity
        wait_until(lambda: "claim the same identity" in caplog.text, 15)
        # let the resolver (every 0.3 s) see both outlets a few more rounds: status.json is
        # rewritten each second, so two rewrites after the warning mean >= 3 more rounds
        after = time.time() + 1.0
        wait_until(
            lambda: (registry.read_status(unique_name) or {}).get("updated", 0) > after + 1, 10
        )
    warning = next(r for r in caplog.records if "claim the same identity" in r.getMessage())
    msg = warning.getMessage()
    assert warning.levelno == logging.WARNING
    assert name in msg and f"source_id {sid!r}" in msg and "its own source_id" in msg
    # logged once per outlet, not once per resolve round (the supervisor resolved repeatedly)
    assert caplog.text.count("claim the same identity") == 1
