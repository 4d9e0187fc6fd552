r"""The supervisor's request socket: where publishing processes register their streams.

Stdlib only. A UNIX stream socket in the namespace's runtime directory
(``<runtime dir>/<namespace>/requests.sock``, published in the registry as
``endpoints["requests"]``). The directory is mode 0700 and the socket 0600, and
on Linux the server also checks the peer's uid (``SO_PEERCRED``) and takes the
peer's pid from the kernel, never from the request: only processes of the
supervisor's user can register a stream, and the pid a stream is listed with is
the pid of the process that holds the connection. It is not a TCP port and is
never reachable from another host.

Wire format
-----------
Both directions: one UTF-8 JSON object per line (``\n``-terminated), at most
:data:`MAX_LINE` bytes. Each request gets exactly one reply, in order::

    -> {"op": "claim", "name": ..., ...}        (see dpshm.shm.derived)
    <- {"ok": true, ...}  or  {"ok": false, "kind": "name_taken", "error": "<message>"}

A connection lives as long as its publisher: the supervisor treats its end
(EOF, also when the process was killed) as the publisher being gone. At most
:data:`MAX_CONNECTIONS` connections are served; a further one gets an error
reply and is closed. A line longer than :data:`MAX_LINE` or not a JSON object
gets an error reply and the connection is closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpshm._logging import library_logger
from dpshm._threads import join_thread
from dpshm._wake import Waker
from dpshm.errors import DpshmTimeoutError, ProtocolError, SupervisorNotRunningError

log = library_logger(__name__)

REQUESTS_FILE = "requests.sock"
MAX_LINE = 64 * 1024
MAX_CONNECTIONS = 256
POLL_S = 0.2  # the server thread's longest block (bounds close())
JOIN_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 5.0  # a client's longest wait for one reply
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

#: ``(connection id, peer pid, request) -> reply``; called on the server's thread.
Handler = Callable[[int, int, dict[str, Any]], dict[str, Any]]


def error_reply(kind: str, message: str) -> dict[str, Any]:
    """The reply refusing a request."""
    return {"ok": False, "kind": kind, "error": message}


def _peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the connected process; (0, own uid) where the OS cannot tell."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:  # not Linux: the 0700 directory is the only gate
        return 0, os.getuid()
    pid, uid, _ = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, opt, _CRED.size))
    return pid, uid


class _Conn:
    __slots__ = ("buf", "id", "pid", "sock")

    def __init__(self, cid: int, pid: int, sock: socket.socket):
        self.id, self.pid, self.sock, self.buf = cid, pid, sock, b""


class RequestServer:
    """The supervisor's side: accepts connections, answers requests on one thread.

    Parameters
    ----------
    path : pathlib.Path
        Socket file to bind (a leftover file of a dead supervisor is replaced:
        the caller holds the namespace lock).
    handler : callable
        ``(connection id, peer pid, request) -> reply`` (see :data:`Handler`).
    on_close : callable
        ``(connection id, peer pid)`` when a connection ended (its process
        exited or closed it).
    """

    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None

    def __init__(
        self,
        path: Path,
        handler: Handler,
        on_close: Callable[[int, int], None],
    ):
        self.path = Path(path)
        self._handler = handler
        self._on_close = on_close
        self._stop = threading.Event()
        self._conns: dict[int, _Conn] = {}
        self._next_id = 0
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)  # the socket file is created 0600
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old)
            sock.listen(16)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot bind the request socket {str(self.path)!r}: {exc}") from None
        self._sock = sock
        self._sel = selectors.DefaultSelector()
        self._sel.register(sock, selectors.EVENT_READ, None)
        self._waker = Waker()  # close() wakes the thread: no wait for its poll timeout
        self._sel.register(self._waker, selectors.EVENT_READ, self._waker)
        self._thread = threading.Thread(target=self._serve, name="dpshm-requests", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._sel.select(POLL_S)
            except OSError:
                return
            for key, _ in events:
                if key.data is self._waker:
                    continue  # close() wants the loop to look at the stop flag
                try:
                    if key.data is None:
                        self._accept()
                    else:
                        self._read(key.data)
                except Exception:  # one bad connection must not end the server
                    log.exception("request socket: handling a connection failed")
                    if key.data is not None:
                        self._drop(key.data)

    def _accept(self) -> None:
        assert self._sock is not None
        try:
            sock, _ = self._sock.accept()
        except BlockingIOError:
            return
        pid, uid = _peer(sock)
        why = None
        if uid != os.getuid():
            why = f"uid {uid} may not register streams with the supervisor of uid {os.getuid()}"
        elif len(self._conns) >= MAX_CONNECTIONS:
            why = (
                f"the supervisor serves at most {MAX_CONNECTIONS} publishers; close one "
                "or run another namespace"
            )
        if why is not None:
            log.warning("request socket: refused a connection from pid %s: %s", pid, why)
            with contextlib.suppress(OSError):
                sock.settimeout(1.0)
                sock.sendall(_line(error_reply("refused", why)))
            sock.close()
            return
        sock.settimeout(REPLY_TIMEOUT_S)  # replies are small: sendall never waits long
        self._next_id += 1
        conn = _Conn(self._next_id, pid, sock)
        self._conns[conn.id] = conn
        self._sel.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(MAX_LINE)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.buf += data
        while b"\n" in conn.buf:
            line, conn.buf = conn.buf.split(b"\n", 1)
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                self._refuse(conn, f"malformed request {line[:80]!r}: {exc}")
                return
            reply = self._handler(conn.id, conn.pid, req)
            conn.sock.sendall(_line(reply))
        if len(conn.buf) > MAX_LINE:
            self._refuse(conn, f"request longer than {MAX_LINE} bytes")

    def _refuse(self, conn: _Conn, why: str) -> None:
        log.warning("request socket: pid %s: %s; connection closed", conn.pid, why)
        with contextlib.suppress(OSError):
            conn.sock.sendall(_line(error_reply("bad_request", why)))
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        if self._conns.pop(conn.id, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
        try:
            self._on_close(conn.id, conn.pid)
        except Exception:
            log.exception("request socket: on_close of pid %s failed", conn.pid)

    def close(self) -> None:
        """Stop the thread, close every connection and the socket, remove its file."""
        self._stop.set()
        self._waker.wake()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            join_thread(t, JOIN_TIMEOUT_S)
        self._waker.close()
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        sock, self._sock = self._sock, None
        if sock is not None:
            self._sel.close()
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RequestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


class RequestClient:
    """A publisher's connection to the supervisor (kept open while it publishes).

    Parameters
    ----------
    path : str or pathlib.Path
        The supervisor's ``endpoints["requests"]``.
    timeout : float
        Longest wait for connecting and for each reply.

    Raises
    ------
    SupervisorNotRunningError
        Nothing listens at ``path``.
    """

    _sock: socket.socket | None = None

    def __init__(self, path: str | Path, timeout: float = REPLY_TIMEOUT_S):
        self.path = str(path)
        self.timeout = timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise SupervisorNotRunningError(
                f"the supervisor's request socket {self.path!r} does not answer ({exc}); "
                "is `dpshm up` running on this namespace?"
            ) from None
        self._sock = sock
        self._buf = b""
        self._lock = threading.Lock()  # one reader at a time (ask vs. wait_closed)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its reply (``{"ok": ...}``).

        Raises
        ------
        DpshmTimeoutError
            No reply within ``timeout``.
        ConnectionError
            The supervisor closed the connection.
        ProtocolError
            The reply is not a JSON object.
        """
        with self._lock:
            return self._ask(request)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        sock = self._sock
        if sock is None:
            raise ValueError("the request connection is closed")
        sock.settimeout(self.timeout)
        # refused at accept (or ended): its reply, if any, is read below
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(_line(request))
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DpshmTimeoutError(
                    f"the supervisor did not answer {request.get('op')!r} within "
                    f"{self.timeout} s; is it overloaded or hung? (`dpshm ls` shows it)"
                )
            sock.settimeout(remaining)
            try:
                data = sock.recv(MAX_LINE)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError("the supervisor closed the request connection")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise ProtocolError(f"malformed reply from the supervisor: {line[:80]!r}")
        return reply

    def wait_closed(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True once the supervisor ended the connection."""
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            sock = self._sock
            if sock is None:
                return True
            sock.settimeout(timeout)
            try:
                data = sock.recv(MAX_LINE)
            except TimeoutError:
                return False
            except OSError:
                return True
        finally:
            self._lock.release()
        if data:  # nothing is sent unasked; keep it for the next ask()
            self._buf += data
            return False
        return True

    def close(self) -> None:
        """Close the connection (idempotent); the supervisor sees its end."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a wait_closed() in another thread
            sock.close()

    def __enter__(self) -> RequestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
