"""The live screen of `dpshm up` as a person sees it: a real terminal (tmux), a real
outlet that goes away and comes back. Every log line stays on screen above the table,
the table shows the stale state with its reason, and no fragment of an old table stays.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

import pytest
from cli_util import pushing
from helpers import ROOT, wait_until
from supervisor_util import child_env, segments

from dpshm.shm import registry

pytestmark = [
    pytest.mark.lsl,
    pytest.mark.skipif(
        shutil.which("tmux") is None,
        reason="tmux is not installed (apt-get install -y tmux): the live screen needs a "
        "real terminal to be tested",
    ),
]

COLS, ROWS = 150, 45


class Terminal:
    """A detached tmux session on its own server socket, running one shell command."""

    def __init__(self, name: str, command: str):
        self.base = ["tmux", "-L", name, "-f", "/dev/null"]
        self._tmux("new-session", "-d", "-x", str(COLS), "-y", str(ROWS), command)

    def _tmux(self, *args: str) -> str:
        res = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def screen(self) -> str:
        """What the pane shows now (visible lines, trailing blanks dropped)."""
        return self._tmux("capture-pane", "-p")

    def shows(self, text: str, timeout: float = 20.0) -> str:
        try:
            wait_until(lambda: text in self.screen(), timeout, 0.1)
        except TimeoutError:
            msg = f"{text!r} not on screen within {timeout} s:\n{self.screen()}"
            raise AssertionError(msg) from None
        return self.screen()

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def close(self) -> None:
        """Ctrl-C the command unless it has ended, wait for it (bounded), end the server."""
        try:
            if "dpshm-exit=" not in self.screen():
                self.keys("C-c")
                wait_until(lambda: "dpshm-exit=" in self.screen(), 20, 0.1)
        except (AssertionError, TimeoutError):  # the server is gone already, or stuck
            pass
        finally:
            subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


def _up_command(ns: str, name: str) -> str:
    env = child_env(ns)
    assigns = " ".join(
        f"{k}={shlex.quote(env[k])}" for k in ("PYTHONPATH", "DPSHM_NAMESPACE", "PATH")
    )
    up = [sys.executable, "-m", "dpshm", "up", "--stream", name, "--resolve-interval-s", "0.3"]
    return (
        f"cd {shlex.quote(str(ROOT))} && env {assigns} {shlex.join(up)}; "
        "echo dpshm-exit=$?; sleep 60"
    )


def _row(screen: str, name: str) -> str:
    rows = [line for line in screen.splitlines() if line.startswith(name + " ")]
    assert len(rows) <= 1, screen  # one table on screen, one row for the stream
    return rows[0] if rows else ""


def _one_table(screen: str, ns: str) -> None:
    """Exactly one table: no title or header line of an older one left behind."""
    assert screen.count(f"namespace '{ns}', supervisor pid") == 1, screen
    assert sum(line.startswith("stream ") for line in screen.splitlines()) == 1, screen


def test_up_keeps_every_log_line_above_the_table(unique_name, outlets):
    ns, name = unique_name, f"{unique_name}-eeg"
    term = Terminal(f"dpshm-{unique_name}", _up_command(ns, name))
    try:
        term.shows("Ctrl-C or `dpshm down` stops it")
        out = outlets.make(name=name, n_channels=2, srate=100.0, source_id=f"{name}-sid")
        with pushing(out, 2, 100.0):
            term.shows(f"stream '{name}' (EEG, 2 ch float32 @ 100 Hz) from host")
            wait_until(lambda: _row(term.screen(), name).endswith(" ok"), 20, 0.1)
        out.close()  # the outlet goes away ...
        screen = term.shows("STALE: outlet closed")
        assert f"stream '{name}' is stale: its outlet closed; keeping its ring" in screen
        assert f"{name}-sid" in _row(screen, name)  # where it comes from: the source_id
        _one_table(screen, ns)
        back = outlets.make(name=name, n_channels=2, srate=100.0, source_id=f"{name}-sid")
        with pushing(back, 2, 100.0):  # ... and comes back
            term.shows(f"stream '{name}' is back; writing resumes")
            wait_until(lambda: _row(term.screen(), name).endswith(" ok"), 20, 0.1)
            screen = term.screen()
        # every line of the story is still on screen, in order, above one table
        lines = screen.splitlines()
        order = [
            next(i for i, line in enumerate(lines) if marker in line)
            for marker in (
                "-> ring",
                f"'{name}' is stale: its outlet closed",
                f"'{name}' is back",
                f"namespace '{ns}', supervisor pid",
            )
        ]
        assert order == sorted(order), screen
        _one_table(screen, ns)
        term.keys("C-c")
        screen = term.shows("dpshm-exit=0")
        assert "Traceback" not in screen and "supervisor on namespace" in screen
    finally:
        term.close()
    assert segments(ns) == [] and registry.read_registry_raw(ns) is None


def test_demo_screen_ends_with_one_table_and_the_summary(unique_name):
    ns = unique_name
    env = child_env(ns)
    demo = [sys.executable, "-m", "dpshm", "demo", "--duration", "3", "--name",
            f"{ns}-m", "--marker-name", f"{ns}-k"]  # fmt: skip
    command = (
        f"cd {shlex.quote(str(ROOT))} && env PYTHONPATH={shlex.quote(env['PYTHONPATH'])} "
        f"DPSHM_NAMESPACE={ns} {shlex.join(demo)}; echo dpshm-exit=$?; sleep 60"
    )
    term = Terminal(f"dpshm-{unique_name}", command)
    try:
        screen = term.shows("dpshm-exit=0", 60)
    finally:
        term.close()
    _one_table(screen, ns)
    lines = [line for line in screen.splitlines() if line.strip()]
    done = next(i for i, line in enumerate(lines) if line.startswith("demo done: "))
    assert lines[-1] == "dpshm-exit=0" and lines[done - 1].startswith("consumer: "), screen
    assert _row(screen, f"{ns}-m").endswith(" ok")  # the last table stays, the summary below
    assert lines[0].startswith("dpshm demo: mock outlets") and "Traceback" not in screen
