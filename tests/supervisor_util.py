"""The one way tests start the system under test: ``python -m dpshm up`` (and other
``dpshm`` commands) as real child processes on a test's own namespace.

``Sup`` is the supervisor, ``Proc`` any other child; the ``procs`` fixture
(conftest) gives a test its namespace and stops and cleans up whatever it
started, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

from helpers import ROOT, TESTS, wait_for_registry, wait_until

RESOLVE_S = "0.3"


def child_env(ns: str) -> dict[str, str]:
    """The environment of a child: this checkout and tests/ importable, the namespace set."""
    parts = (str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", ""))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in parts if p), DPSHM_NAMESPACE=ns)


class Proc:
    """A child process whose output is collected by a thread (no pipe ever fills)."""

    def __init__(self, ns: str, args: list[str], cwd: str | os.PathLike | None = None):
        self.ns = ns
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            env=child_env(ns),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(cwd or ROOT),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def saw(self, text: str, timeout: float = 10.0) -> str:
        try:
            wait_until(lambda: text in self.output, timeout)
        except TimeoutError:
            raise AssertionError(
                f"{text!r} not printed within {timeout} s by {self.proc.args[1:4]} "
                f"(exit code {self.proc.poll()}); output:\n{self.output[-2000:]}"
            ) from None
        return self.output

    def finish(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        return self.stop()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return rc


class Sup(Proc):
    """``python -m dpshm up --quiet`` on a namespace, sharing only ``streams``.

    Other tests' outlets are visible on the machine, so a test names its own
    streams; ``args`` are more flags (``--config``, ``--port``, ...).
    """

    def __init__(
        self,
        ns: str,
        *streams: str,
        args: tuple[str, ...] = (),
        cwd: str | os.PathLike | None = None,
    ):
        sel = [a for s in streams for a in ("--stream", s)]
        super().__init__(
            ns,
            ["-m", "dpshm", "up", "--quiet", "--resolve-interval-s", RESOLVE_S, *sel, *args],
            cwd=cwd,
        )

    def ready(self, timeout: float = 15.0):
        """The registry, once this supervisor has written it."""
        return wait_for_registry(self.ns, timeout, pid=self.proc.pid)

    def port(self, timeout: float = 15.0) -> int:
        """The TCP port the supervisor printed it serves its commands on."""
        self.saw("commands on ", timeout)
        m = wait_until(lambda: re.search(r"commands on \S+:(\d+)\b", self.output), timeout)
        return int(m.group(1))

    def entry(self, name: str, pred=lambda e: True, timeout: float = 15.0):
        """The registry entry of stream ``name`` (matching ``pred``), once listed."""
        from dpshm.shm import registry

        def found():
            try:
                reg = registry.read_registry(self.ns)
            except LookupError:
                return None
            for e in reg.streams.values():
                if e.name == name and pred(e):
                    return e
            return None

        return wait_until(found, timeout)


def stop_all(ns: str, started: list[Proc]) -> None:
    """Stop every child, then remove what a killed supervisor left on ``ns``."""
    from dpshm.shm import registry

    for p in started:  # SIGTERM: a supervisor unlinks its rings (SIGKILL after 5 s)
        p.stop(signal.SIGTERM, 5)
    for seg in segments(ns):  # a supervisor killed by a failing test leaves its rings
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/{seg}")
    shutil.rmtree(registry.namespace_dir(ns, create=False), ignore_errors=True)


def segments(ns: str) -> list[str]:
    """The shared-memory segments of namespace ``ns`` in /dev/shm."""
    return sorted(e for e in os.listdir("/dev/shm") if e.startswith(f"dpshm_{ns}."))


#: A consumer process: ``python -c READER NAME N OUT.npz [DPSHM_WAKE]`` reads ``N``
#: samples of stream ``NAME`` with ``wait``/``read_new`` and saves what it got
#: (``data``, ``ts``, the summed ``lost``); it prints ``ready <writer pid>`` once
#: attached and ``done <count>`` at the end.
READER = r"""
import os, sys, time
if len(sys.argv) > 4:
    os.environ["DPSHM_WAKE"] = sys.argv[4]
import numpy as np
from dpshm import SharedStreamView
name, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with SharedStreamView(name) as v:
    print("ready", v.writer_pid, flush=True)
    data, ts, lost, got = [], [], 0, 0
    end = time.monotonic() + 30
    while got < n and time.monotonic() < end:
        if v.wait(1.0):
            d, t, l = v.read_new()
            data.append(d); ts.append(t); lost += l; got += len(t)
    np.savez(out, data=np.concatenate(data), ts=np.concatenate(ts), lost=lost)
print("done", got, flush=True)
"""
