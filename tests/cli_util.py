"""Helpers for the command-line tests (import as ``from cli_util import ...``): one
``python -m dpshm`` command run to completion or interrupted like a terminal's Ctrl-C,
and an outlet pushing from a thread. Supervisors start through ``supervisor_util``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from helpers import ROOT, wait_until
from supervisor_util import child_env


def run_dpshm(ns: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``python -m dpshm ARGS`` on namespace ``ns`` to completion (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "dpshm", *args], env=child_env(ns), capture_output=True,
        text=True, timeout=timeout, cwd=str(ROOT),
    )  # fmt: skip


def spawn_dpshm(ns: str, *args: str, python_flags: Sequence[str] = ()) -> subprocess.Popen:
    """Start ``python -m dpshm ARGS`` in its own session (a terminal's process group)."""
    return subprocess.Popen(
        [sys.executable, *python_flags, "-m", "dpshm", *args],
        env={**child_env(ns), "PYTHONFAULTHANDLER": "1"},  # SIGABRT dumps every stack
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
        start_new_session=True,
    )  # fmt: skip


def ctrl_c(
    proc: subprocess.Popen, when: Callable[[], object], timeout: float = 30.0, collect: bool = True
) -> tuple[str, str]:
    """Once ``when()`` holds, send Ctrl-C (SIGINT to the group); (stdout, stderr) at exit.

    ``collect=False`` when the caller reads the pipes itself (then ``("", "")``).
    The process is killed if it does not end within ``timeout`` after the Ctrl-C:
    first with SIGABRT, so that faulthandler (``PYTHONFAULTHANDLER``, set by tox and
    here) writes every thread's stack to its stderr, then with SIGKILL.
    """
    try:
        wait_until(lambda: when() or proc.poll() is not None, timeout, 0.001)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        if not collect:
            proc.wait(timeout)
            return "", ""
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if collect:
            with contextlib.suppress(ValueError):  # pipes already read by communicate()
                proc.communicate(timeout=10)
        else:
            proc.wait(10)


@contextlib.contextmanager
def pushing(outlet, n_channels: int, srate: float) -> Iterator[None]:
    """Push a ramp into ``outlet`` from a thread, 10 ms chunks, until the block ends."""
    stop = threading.Event()

    def run() -> None:
        i, n = 0, max(1, int(srate / 100))
        while not stop.wait(n / srate):
            rows = np.arange(i, i + n, dtype=np.float32)[:, None] + np.zeros(n_channels, "f4")
            outlet.push_chunk(rows)
            i += n

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)
