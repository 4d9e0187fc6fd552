"""Helpers of the viewer tests: real ``dpshm`` child processes and plain HTTP requests."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_until

REPO = Path(__file__).resolve().parents[2]


class Child:
    """``python -m dpshm ARGS`` on a namespace; output goes to a file (no pipe fills)."""

    def __init__(self, ns: str, args: list[str], log: Path):
        self.log = log
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self._out = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dpshm", *args],
            env=dict(os.environ, PYTHONPATH=path, DPSHM_NAMESPACE=ns),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
        )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match:
        """Wait until the output matches ``pattern``; the match."""

        def found():
            return re.search(pattern, self.output)

        try:
            return wait_until(found, timeout, interval=0.05)
        except TimeoutError:
            raise AssertionError(
                f"{pattern!r} not printed within {timeout} s by {self.proc.args[3:5]} (exit "
                f"{self.proc.poll()}); output:\n{self.output[-2000:]}"
            ) from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._out.close()
        return rc


@contextlib.contextmanager
def children(ns: str, tmp_path: Path):
    """A factory of :class:`Child` processes, all stopped at exit (killed if need be)."""
    started: list[Child] = []

    def start(*args: str) -> Child:
        c = Child(ns, list(args), tmp_path / f"{args[0]}-{len(started)}.log")
        started.append(c)
        return c

    try:
        yield start
    finally:
        for c in reversed(started):
            c.stop()


def supervise(start, *streams: str, port: bool = False) -> Child:
    """``dpshm up`` sharing only ``streams`` (other tests' outlets are visible too)."""
    sel = [a for s in streams for a in ("--stream", s)]
    extra = ["--port", "0"] if port else []
    return start("up", "--quiet", "--resolve-interval-s", "0.3", *extra, *sel)


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    """One request to 127.0.0.1:port; ``(status, headers, body bytes)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()
