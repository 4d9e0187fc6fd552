"""Helpers for the command-line tests (import as ``from cli_util import ...``):
``python -m dpshm`` on a namespace, a supervisor in this process, a pushing outlet."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from helpers import ROOT, wait_until

from dpshm import config as C
from dpshm.shm import registry
from dpshm.shm.supervisor import Supervisor


def dpshm_env(ns: str, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m dpshm`` child on namespace ``ns``."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, DPSHM_NAMESPACE=ns, **extra)


def run_dpshm(ns: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``python -m dpshm ARGS`` to completion (bounded); output as text."""
    return subprocess.run(
        [sys.executable, "-m", "dpshm", *args], env=dpshm_env(ns), capture_output=True,
        text=True, timeout=timeout, cwd=str(ROOT),
    )  # fmt: skip


def segments(ns: str) -> list[str]:
    """This namespace's shared-memory segments in /dev/shm."""
    return sorted(p.name for p in Path("/dev/shm").glob(f"dpshm_{ns}.*"))


@contextlib.contextmanager
def supervisor(ns: str, *names: str) -> Iterator[Supervisor]:
    """A real supervisor in this process sharing the streams ``names`` (all removed after)."""
    sels = [C.StreamSelector(name=n) for n in names] or [C.StreamSelector(name=f"{ns}-none")]
    cfg = C.load_config(
        None, env={}, overrides={"namespace": ns, "streams": sels, "resolve_interval_s": 0.3}
    )
    try:
        with Supervisor(cfg) as sup:
            yield sup
    finally:
        shutil.rmtree(registry.namespace_dir(ns, create=False), ignore_errors=True)


def shared(ns: str, name: str, timeout: float = 15.0) -> registry.StreamEntry:
    """Wait until the supervisor of ``ns`` shares stream ``name``; its registry entry."""

    def entry():
        with contextlib.suppress(LookupError):
            for e in registry.read_registry(ns).streams.values():
                if e.name == name:
                    return e
        return None

    return wait_until(entry, timeout)


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


def spawn_dpshm(ns: str, *args: str, python_flags: Sequence[str] = ()) -> subprocess.Popen:
    """Start ``python -m dpshm ARGS`` in its own session (a terminal's process group)."""
    return subprocess.Popen(
        [sys.executable, *python_flags, "-m", "dpshm", *args], env=dpshm_env(ns),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
        start_new_session=True,
    )  # fmt: skip


def ctrl_c(
    proc: subprocess.Popen, when: Callable[[], object], timeout: float = 30.0, collect: bool = True
) -> tuple[str, str]:
    """Once ``when()`` holds, send Ctrl-C (SIGINT to the group); (stdout, stderr) at exit.

    ``collect=False`` when the caller reads the pipes itself (then ``("", "")``).
    The process is killed if it does not end within ``timeout`` after the Ctrl-C.
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
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
