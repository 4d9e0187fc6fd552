"""`dpshm tail` prints at a readable rate: a header naming the columns, at most
--rate lines a second, each the newest sample and the count since the previous
line (they add up to every sample), the newest sample at the end; markers all."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ROOT, wait_until
from supervisor_util import Proc, Sup, child_env

pytestmark = pytest.mark.lsl


def _tail(ns: str, *args: str) -> Proc:
    return Proc(ns, ["-m", "dpshm", "tail", *args])


def _lines(tail: Proc) -> list[str]:
    assert tail.finish(30) == 0, tail.output
    return tail.output.splitlines()


def _push(outlet, total: int, chunk: int, every_s: float) -> None:
    for start in range(0, total, chunk):
        rows = np.arange(start, start + chunk, dtype=np.float32)[:, None] * [1.0, -1.0]
        outlet.push_chunk(rows.astype(np.float32))
        time.sleep(every_s)  # the outlet's pace (data generation, not synchronisation)


def test_numeric_lines_are_rate_limited_and_add_up(procs, outlets):
    ns, started = procs
    name = f"{ns}-eeg"
    out = outlets.make(name=name, n_channels=2, srate=200.0, channel_names=["Fz", "Cz"])
    sup = Sup(ns, name)
    started.append(sup)
    sup.entry(name)
    wait_until(out.have_consumers, 10)
    tail = _tail(ns, name, "--duration", "5")
    started.append(tail)
    wait_until(lambda: len(tail.lines) >= 2, 15)  # attached: header printed
    _push(out, total=400, chunk=10, every_s=0.05)  # 2 s, 40 chunks
    lines = _lines(tail)
    host = socket.gethostname()
    assert lines[0].startswith(f"{name}: 2 ch float32 @ 200 from host {host!r}, source_id ")
    header = lines[1].split()
    assert header[:5] == ["time", "(LSL", "s)", "new", "Fz"] and header[5] == "Cz", lines[1]
    assert "at most 5 lines/s" in lines[1]
    data = lines[2:]
    counts = [int(line.split()[1].lstrip("+")) for line in data]
    assert sum(counts) == 400, data  # every sample accounted for, none printed twice
    # 40 chunks in ~2 s: at most 5 lines a second (+1 for the pending newest at the end)
    assert 2 <= len(data) <= 5 * 5 + 1 and len(data) < 40, data
    newest = data[-1].split()
    assert float(newest[2]) == 399.0 and float(newest[3]) == -399.0, data[-1]


def test_rate_zero_prints_every_chunk_and_markers_all(procs, outlets):
    ns, started = procs
    name, mk = f"{ns}-eeg", f"{ns}-mk"
    out = outlets.make(name=name, n_channels=2, srate=200.0)
    markers = outlets.make(name=mk, type="Markers", n_channels=1, srate=0.0,
                           channel_format="string")  # fmt: skip
    sup = Sup(ns, name, mk)
    started.append(sup)
    sup.entry(name)
    sup.entry(mk)
    wait_until(lambda: out.have_consumers() and markers.have_consumers(), 10)
    every = _tail(ns, name, "--rate", "0", "--duration", "4")
    marks = _tail(ns, "--type", "Markers", "--duration", "4")  # chosen by its type
    started += [every, marks]
    wait_until(lambda: len(every.lines) >= 2 and len(marks.lines) >= 2, 15)
    for i in range(30):  # 30 markers in a burst: more than 5 a second, all shown
        markers.push_sample([f"m{i}"])
    _push(out, total=100, chunk=10, every_s=0.1)
    every_lines, mark_lines = _lines(every), _lines(marks)
    assert "one per chunk" in every_lines[1]
    assert sum(int(line.split()[1].lstrip("+")) for line in every_lines[2:]) == 100
    assert len(every_lines[2:]) >= 5  # 10 chunks, 0.1 s apart: (almost) one line each
    assert mark_lines[0].startswith(f"{mk}: 1 ch string"), mark_lines[0]
    assert "marker" in mark_lines[1]
    assert [line.split()[-1] for line in mark_lines[2:]] == [f"m{i}" for i in range(30)]


def test_tail_refuses_a_negative_rate(procs, outlets):
    ns, started = procs
    name = f"{ns}-eeg"
    outlets.make(name=name, n_channels=2, srate=200.0)
    sup = Sup(ns, name)
    started.append(sup)
    sup.entry(name)
    res = subprocess.run(
        [sys.executable, "-m", "dpshm", "tail", name, "--rate", "-1"], env=child_env(ns),
        capture_output=True, text=True, timeout=30, cwd=str(ROOT),
    )  # fmt: skip
    assert res.returncode == 1 and res.stderr.startswith("dpshm tail: error: --rate"), res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "dpshm", "tail"], env=child_env(ns),
        capture_output=True, text=True, timeout=30, cwd=str(ROOT),
    )  # fmt: skip
    assert res.returncode == 1 and "give its NAME, --type or --source-id" in res.stderr, res.stderr
