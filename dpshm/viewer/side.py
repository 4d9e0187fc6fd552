"""The viewer's side panels: the supervisor's log tail and its workers.

:class:`LogTail` subscribes to the JSON log records the supervisor publishes
on ZeroMQ (the ``logs`` endpoint of its registry, as ``dpshm logs`` does) and
keeps the newest :data:`LOG_TAIL` of them, numbered, so each page gets only
what it has not seen. It re-subscribes when the supervisor is restarted.

:class:`WorkerPoll` asks the supervisor's TCP command server
``LIST_WORKERS`` (at most every :data:`WORKERS_EVERY_S`, only while a page is
open) on one connection it keeps open; the supervisor logs these queries at
DEBUG, so the polling does not fill its log. It finds that server in the
supervisor's registry (the ``commands`` endpoint, and ``commands_auth``:
whether it needs a token; the token itself is never written there), unless
told a port (``dpshm view --supervisor-port``). A supervisor without a command
server: the page says how to open one. It never sends any other command.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from dpshm._logging import library_logger
from dpshm._threads import join_thread
from dpshm.dareplane.logs import record_message
from dpshm.errors import SupervisorNotRunningError
from dpshm.shm import registry
from dpshm.shm.bus import LogSubscriber

log = library_logger(__name__)

#: Log records kept for the pages.
LOG_TAIL = 200
#: Longest message kept per record (characters).
MAX_MESSAGE = 2000
#: Seconds between LIST_WORKERS requests while a page is open.
WORKERS_EVERY_S = 2.0
#: Timeout (s) of one LIST_WORKERS exchange.
WORKERS_TIMEOUT_S = 2.0
#: Longest LIST_WORKERS reply read (bytes).
MAX_REPLY = 1 << 20


class LogTail:
    """The newest log records of a namespace's supervisor (a background thread).

    Parameters
    ----------
    namespace : str
        The supervisor's namespace.
    """

    _thread: threading.Thread | None = None

    def __init__(self, namespace: str):
        self.namespace = namespace
        #: The ZeroMQ endpoint subscribed to (None while no supervisor runs).
        self.endpoint: str | None = None
        self._records: deque[dict[str, Any]] = deque(maxlen=LOG_TAIL)
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dpshm-view-logs", daemon=True)
        self._thread.start()

    def since(self, seq: int) -> tuple[int, list[dict[str, Any]]]:
        """Records numbered above ``seq`` (oldest first) and the newest number."""
        with self._lock:
            return self._seq, [r for r in self._records if r["seq"] > seq]

    def _add(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            self._records.append(
                {
                    "seq": self._seq,
                    "created": rec.get("created"),
                    "level": str(rec.get("levelname", "?")),
                    "levelno": rec.get("levelno", 0),
                    "name": str(rec.get("name", "?")),
                    "message": _printable(record_message(rec))[:MAX_MESSAGE],
                    "exc_text": _printable(str(rec.get("exc_text") or ""))[:MAX_MESSAGE],
                }
            )

    def _run(self) -> None:
        sub: LogSubscriber | None = None
        next_check, stamp = 0.0, False  # False: never looked
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 1.0
                    seen, stamp = stamp, registry.registry_stamp(self.namespace)
                    # a new supervisor rewrites the registry: read it only then
                    new = _logs_endpoint(self.namespace) if stamp != seen else self.endpoint
                    if new != self.endpoint:
                        if sub is not None:
                            sub.close()
                            sub = None
                        if new:
                            sub = LogSubscriber(new)
                        self.endpoint = new
                if sub is None:
                    self._stop.wait(0.5)
                    continue
                for rec in sub.recv(0.5):
                    if isinstance(rec, dict):
                        self._add(rec)
        except Exception:  # never take the viewer down; say why the panel stopped
            log.exception("the viewer's log tail stopped")
        finally:
            if sub is not None:
                sub.close()

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        self._stop.set()
        t, self._thread = self._thread, None
        join_thread(t, 5.0)


def parse_tcp(endpoint: str) -> tuple[str, int] | None:
    """``tcp://HOST:PORT`` -> ``(host to connect to, port)``; None if not one.

    A wildcard host (``0.0.0.0``, ``::``) is reached on ``127.0.0.1``.
    """
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[6:].rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or not host or not 0 < int(port) < 65536:
        return None
    return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), int(port)


def no_command_server(supervisor_runs: bool) -> str:
    """What the page says when the viewer knows no command server, and how to get one."""
    first = (
        "the supervisor serves no command server"
        if supervisor_runs
        else "no supervisor runs on this namespace"
    )
    return (
        f"{first}: start it with `dpshm up --port 0` (any free port; or --port N, or a "
        "[server] table in its config) to list its workers here; the viewer finds the port "
        "by itself (or pass `dpshm view --supervisor-port N`)"
    )


def _logs_endpoint(namespace: str) -> str | None:
    try:
        return registry.read_registry(namespace).endpoints.get("logs") or None
    except SupervisorNotRunningError:
        return None


def _printable(text: str) -> str:
    r"""Control characters (but newlines and tabs) shown as ``\xNN``: no forged lines."""
    return "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in text)


class WorkerPoll:
    """``LIST_WORKERS`` of the supervisor's command server, cached.

    Parameters
    ----------
    port : int or None
        The command server's port on ``host``; ``None``: found through
        ``endpoints`` (the supervisor's registry).
    token : str, optional
        Sent as ``AUTH|<token>`` first when the server wants one.
    host : str
        Where to connect when ``port`` is given.
    endpoints : callable, optional
        Returns the running supervisor's registry endpoints (``{}``: none runs).
    """

    def __init__(
        self,
        port: int | None,
        token: str | None = None,
        host: str = "127.0.0.1",
        endpoints: Callable[[], Mapping[str, str]] | None = None,
    ):
        self.port, self.token, self.host = port, token, host
        self._fixed = port is not None
        self._endpoints = endpoints
        self._lock = threading.Lock()
        self._next = 0.0
        self._last: dict[str, Any] = {}
        self._conn: _Lines | None = None

    def get(self) -> dict[str, Any]:
        """The newest ``LIST_WORKERS`` reply (or why there is none); thread-safe."""
        with self._lock:
            if time.monotonic() >= self._next:
                self._last = self._poll()
                self._next = time.monotonic() + WORKERS_EVERY_S
            return self._last

    def _poll(self) -> dict[str, Any]:
        if not self._fixed:
            problem = self._locate()
            if problem is not None:
                return problem
        return self._ask()

    def _locate(self) -> dict[str, Any] | None:
        """Follow the registry's ``commands`` endpoint; a reply saying why not, or None."""
        eps = self._endpoints() if self._endpoints is not None else {}
        where = parse_tcp(eps.get("commands", ""))
        if where is None:
            self.close()
            self.port = None
            return {"enabled": False, "error": no_command_server(bool(eps))}
        if where != (self.host, self.port):
            self.close()  # another supervisor (or port): a new connection
            self.host, self.port = where
        if eps.get("commands_auth") == "token" and not self.token:
            return {
                "enabled": True,
                "error": f"the supervisor's command server on {self.host}:{self.port} needs "
                "a token: start the viewer with --supervisor-token T ([server] token of "
                "the supervisor's config) to list the workers here",
            }
        return None

    def _connect(self) -> _Lines:
        """One connection kept open (a connection per poll would log two lines each)."""
        if self._conn is None:
            sock = socket.create_connection((self.host, self.port), WORKERS_TIMEOUT_S)
            sock.settimeout(WORKERS_TIMEOUT_S)
            lines = _Lines(sock)
            try:
                lines.next()  # "Connected to <name>"
                if self.token:
                    sock.sendall(f"AUTH|{self.token};".encode())
                    ok = lines.next()
                    if ok != "OK":
                        raise OSError(f"the command server refused the token: {ok}")
            except BaseException:
                sock.close()
                raise
            self._conn = lines
        return self._conn

    def _ask(self) -> dict[str, Any]:
        where = f"{self.host}:{self.port}"
        try:
            lines = self._connect()
            lines.sock.sendall(b"LIST_WORKERS;")
            reply = lines.next()
        except OSError as exc:
            self.close()
            return {"enabled": True, "error": f"no answer from the command server on {where}: "
                    f"{exc}"}  # fmt: skip
        if reply.startswith("ERROR"):
            return {"enabled": True, "error": f"{where} refused LIST_WORKERS: {reply}"}
        try:
            data = json.loads(reply)
        except ValueError:
            return {"enabled": True, "error": f"{where} sent no JSON: {reply[:200]!r}"}
        if not isinstance(data, dict):
            return {"enabled": True, "error": f"{where} sent {type(data).__name__}, not an object"}
        return {"enabled": True, "error": None, "server": where, **data}

    def close(self) -> None:
        """Close the connection to the command server (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.sock.close()


class _Lines:
    """Newline-terminated lines of a socket, bounded by :data:`MAX_REPLY`."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def next(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("connection closed before a full reply")
            self.buf += chunk
            if len(self.buf) > MAX_REPLY:
                raise OSError(f"reply longer than {MAX_REPLY} bytes")
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").strip()
