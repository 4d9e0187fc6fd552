"""examples/ring_demo.py runs, reports and cleans up (also on Ctrl-C)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, wait_until

DEMO = ROOT / "examples" / "ring_demo.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _segment(name: str) -> Path:
    return Path("/dev/shm") / f"dpshm_{name}"


def test_demo_runs_and_accounts_for_every_sample(unique_name):
    r = subprocess.run(
        [sys.executable, str(DEMO), "--seconds", "1", "--name", unique_name, "--channels", "8"],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    done = re.findall(
        r"reader (\d) done: received (\d+) \+ lost (\d+) = samples (\d+)\.\.(\d+)", r.stdout
    )
    assert sorted(d[0] for d in done) == ["1", "2"], r.stdout
    for _, received, lost, first, last in done:
        assert int(received) > 0 and int(received) + int(lost) == int(last) - int(first)
    assert "bad chunks 0" in r.stdout and "Traceback" not in r.stderr
    assert not _segment(unique_name).exists()


def test_demo_ctrl_c_leaves_nothing_behind(unique_name, tmp_path):
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, str(DEMO), "--seconds", "60", "--name", unique_name,
             "--channels", "8", "--readers", "1"],
            stdout=f, stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(lambda: "reader 1:" in out.read_text(), timeout=30)
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            assert proc.wait(timeout=30) == 130
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    text = out.read_text()
    assert "interrupted" in text and "reader 1 done" in text and "Traceback" not in text
    assert not _segment(unique_name).exists()
