"""``UP`` -> ``1`` command round trip: dpshm's DefaultServer vs the original's.

Each server runs in its own subprocess (the original configures the root
logger on import) with one connected client here; calls to the servers
alternate so that load from other processes hits all alike. Figures are p50
and p99 over ``n`` calls after a warm-up of 50.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time

import numpy as np

from dpshm.bench._common import NEEDS_ORIGINAL, Row, child_env, percentiles

#: Import line of each server implementation.
SERVERS = {
    "dpshm": "from dpshm.dareplane.server import DefaultServer",
    "dareplane-utils": "from dareplane_utils.default_server.server import DefaultServer",
}
_SERVE = r"""
{imp}
srv = DefaultServer(0, ip="127.0.0.1", name="bench")
srv.init_server()
print(srv.server_socket.getsockname()[1], flush=True)
srv.start_listening()
srv.shutdown()
"""
_TIMEOUT_S = 10.0
WARMUP = 50


class ServerPeer:
    """A server subprocess plus one connected client socket (context manager)."""

    proc: subprocess.Popen | None = None
    sock: socket.socket | None = None

    def __init__(self, imp: str) -> None:
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _SERVE.format(imp=imp)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=child_env(),
            )
            line = _readline(self.proc, _TIMEOUT_S)
            self.sock = socket.create_connection(("127.0.0.1", int(line)), timeout=_TIMEOUT_S)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            banner = b""
            while not banner.endswith(b"\n"):
                part = self.sock.recv(100)
                if not part:
                    raise ConnectionError("server closed the connection before its banner")
                banner += part
        except BaseException:
            self.close()
            raise

    def up(self, msg: bytes) -> float:
        """Send ``msg``; return the seconds until the reply ``1`` arrived."""
        assert self.sock is not None
        t0 = time.perf_counter()
        self.sock.sendall(msg)
        reply = self.sock.recv(1)
        if reply != b"1":
            raise ConnectionError(f"server replied {reply!r} to {msg!r}, expected b'1'")
        return time.perf_counter() - t0

    def close(self) -> None:
        """Close the client, ask the server to stop, and stop its process (idempotent)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.sendall(b"CLOSE;")
            sock.close()
        proc, self.proc = self.proc, None
        if proc is not None:
            from dpshm.dareplane.procs import stop_process_tree

            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)
            stop_process_tree(proc, grace_s=1)
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> ServerPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _readline(proc: subprocess.Popen, timeout: float) -> bytes:
    """First stdout line of ``proc`` within ``timeout`` seconds."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"server subprocess printed no port within {timeout} s")
    line = proc.stdout.readline()
    if not line.strip():
        raise RuntimeError(f"server subprocess exited (code {proc.poll()}) before its port")
    return line


def original_available() -> bool:
    """Whether the original dareplane-utils is importable (without importing it)."""
    return importlib.util.find_spec("dareplane_utils") is not None


def bench_up(n: int, cases: list[tuple[str, bytes]] | None = None) -> dict[str, np.ndarray]:
    """Round-trip times in seconds per ``"<server> <msg>"`` case, interleaved.

    ``cases`` defaults to ``UP;`` to both servers (the original's only when installed).
    """
    if cases is None:
        cases = [("dpshm", b"UP;")]
        if original_available():
            cases.append(("dareplane-utils", b"UP;"))
    res = {f"{name} {msg.decode()}": np.empty(n) for name, msg in cases}
    with contextlib.ExitStack() as stack:
        peers = {name: stack.enter_context(ServerPeer(SERVERS[name])) for name, _ in cases}
        for i in range(-WARMUP, n):
            for name, msg in cases if i % 2 else cases[::-1]:
                dt = peers[name].up(msg)
                if i >= 0:
                    res[f"{name} {msg.decode()}"][i] = dt
    return res


def measure(n: int = 1000) -> list[Row]:
    """Suite rows: ``UP;`` round trip p50 and p99 vs the original server."""
    res = bench_up(n)
    ours = percentiles(res["dpshm UP;"], 1e6)
    orig = res.get("dareplane-utils UP;")
    theirs = percentiles(orig, 1e6) if orig is not None else (None, None)
    needs = None if orig is not None else NEEDS_ORIGINAL
    base = "original DefaultServer"
    return [
        Row("up_roundtrip/p50", "`UP;` -> `1` round trip p50", "us", ours[0], base, theirs[0],
            needs, {"n": n}),
        Row("up_roundtrip/p99", "`UP;` -> `1` round trip p99", "us", ours[1], base, theirs[1],
            needs, {"n": n}),
    ]  # fmt: skip
