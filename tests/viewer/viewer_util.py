"""Helpers of the viewer tests: ``dpshm`` children (through ``supervisor_util``, the one
way tests start the system) and plain HTTP requests."""

from __future__ import annotations

import http.client
import re

from helpers import wait_until
from supervisor_util import Proc, Sup


def start(procs, *args: str) -> Proc:
    """``python -m dpshm ARGS`` on the test's namespace, stopped after the test."""
    ns, started = procs
    p = Proc(ns, ["-m", "dpshm", *args])
    started.append(p)
    return p


def supervise(procs, *streams: str, port: bool = False, args: tuple[str, ...] = ()) -> Sup:
    """``dpshm up`` sharing only ``streams``; ``port``: its command server on a free port
    (``--port 0``); ``args``: more flags."""
    ns, started = procs
    sup = Sup(ns, *streams, args=(("--port", "0") if port else ()) + args)
    started.append(sup)
    return sup


def url_of(proc: Proc, timeout: float = 20.0) -> str:
    """The page address a ``dpshm view`` (or ``demo --view``) child printed."""
    pattern = r"http://127\.0\.0\.1:\d+/(\?token=[\w-]+)?"
    proc.saw("http://127.0.0.1:", timeout)
    return wait_until(lambda: re.search(pattern, proc.output), timeout).group(0)


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    """One request to 127.0.0.1:port; ``(status, headers, body bytes)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()
