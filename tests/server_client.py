"""Test helpers for the command server: a raw TCP client and a running-server factory."""

from __future__ import annotations

import socket
import threading
import time

from dpshm.dareplane.server import DefaultServer


class RawClient:
    """A raw control-room-style client with bounded reads."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.banner = self.read_line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not chunk:
            raise ConnectionError(f"server closed the connection; buffered {self.buf!r}")
        self.buf += chunk
        return True

    def read_exact(self, n: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise TimeoutError(f"wanted {n} bytes, have {self.buf!r}")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buf:
            if not self._fill(deadline):
                raise TimeoutError(f"no line within {self.timeout} s, have {self.buf!r}")
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def ask(self, data: bytes, n: int) -> bytes:
        self.send(data)
        return self.read_exact(n)

    def nothing_pending(self, wait_s: float = 0.05) -> bool:
        """True if no byte arrives within ``wait_s`` (a bounded negative check)."""
        return not self.buf and not self._fill(time.monotonic() + wait_s)

    def close(self) -> None:
        self.sock.close()


class RunningServer:
    """A server on an OS-chosen port, listening in a thread; ``stop()`` is bounded."""

    def __init__(self, server: DefaultServer) -> None:
        self.server = server
        server.init_server()
        self.port = server.port
        self.thread = threading.Thread(target=server.start_listening, daemon=True)
        self.thread.start()
        self.clients: list[RawClient] = []

    def client(self, **kw: float) -> RawClient:
        c = RawClient(self.port, **kw)
        self.clients.append(c)
        return c

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.server.shutdown()
        self.thread.join(5)
        assert not self.thread.is_alive()
