"""The viewer's HTTP server: the page, a JSON/binary API and server-sent events.

Standard library only (:class:`http.server.ThreadingHTTPServer`). Read-only:
every route is a ``GET``; any other method gets ``405``. Nothing a client
sends starts, stops or writes anything.

Routes::

    /                      the page (static/index.html); /?token=T sets the cookie
    /viewer.js, /viewer.css
    /api/streams           JSON: the stream table (StreamBook.table)
    /api/window?key=K&seconds=S&width=W[&since=C][&ch0=I][&nch=N]
                           binary: decimated window (layout in dpshm.viewer.columns)
    /api/markers?key=K[&n=N]  JSON: newest markers of a string stream
    /api/logs?since=SEQ    JSON: log records after SEQ
    /api/workers           JSON: LIST_WORKERS of the supervisor (or why not)
    /api/events            text/event-stream: "streams" every STATUS_EVERY_S,
                           "logs" when records arrive, "workers" when they change
    /api/trace?key=K&seconds=S&width=W[&ch0=I][&nch=N]
                           text/event-stream: "window" every TRACE_EVERY_S with the
                           columns completed since the last one (base64 of a binary
                           frame, see dpshm.viewer.trace); "problem" when the stream
                           is gone. What the page uses: no request per frame.

Security
--------
* Binds 127.0.0.1 by default; any other address needs a token
  (:func:`check_view_bind`), which a page presents as a cookie (set by
  ``/?token=T``) and a script as ``?token=T``.
* On a loopback bind, a request whose ``Host`` header is not
  ``127.0.0.1:PORT``, ``localhost:PORT`` or ``[::1]:PORT`` is refused (``421``):
  a web page on another name (DNS rebinding) cannot read the viewer.
* Bounded: :data:`MAX_CONNECTIONS` connections (more get ``503`` at once),
  :data:`MAX_EVENT_CLIENTS` event streams of each kind, request lines of
  :data:`MAX_URL` bytes, no request bodies, idle connections closed after
  :data:`IDLE_TIMEOUT_S`; window size bounds in :mod:`dpshm.viewer.data`.
  Every refusal names the limit; the log says so at most every 10 s per limit.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import http.server
import importlib.resources
import logging
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from dpshm._logging import library_logger
from dpshm._threads import join_thread
from dpshm.config import DEFAULT_VIEW_HOST, DEFAULT_VIEW_PORT
from dpshm.control.commands import to_json_line
from dpshm.dareplane.server import is_loopback
from dpshm.errors import ConfigError, DpshmError
from dpshm.viewer.data import StreamBook, ViewerError, WindowRequest
from dpshm.viewer.side import LogTail, WorkerPoll
from dpshm.viewer.trace import TraceCursor

log = library_logger(__name__)

#: Most simultaneous connections (page, scripts, event streams together).
MAX_CONNECTIONS = 32
#: Most simultaneous event streams (open pages).
MAX_EVENT_CLIENTS = 8
#: Longest request line (bytes).
MAX_URL = 4096
#: Seconds an idle keep-alive connection is kept.
IDLE_TIMEOUT_S = 30.0
#: Seconds between "streams" events.
STATUS_EVERY_S = 0.5
#: Seconds between frames of a trace stream. The page scrolls its display at the
#: stream's rate between frames (up to 25 drawings a second), so frames can be few:
#: each costs the viewer a wake-up, the most of its work.
TRACE_EVERY_S = 0.1
#: Seconds between workers checks of an event stream.
WORKERS_EVERY_S = 2.0
STATIC = {"/": ("index.html", "text/html"), "/viewer.js": ("viewer.js", "text/javascript"),
          "/viewer.css": ("viewer.css", "text/css")}  # fmt: skip
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def check_view_bind(host: str, token: str | None) -> None:
    """Refuse serving the viewer on a non-loopback address without a token.

    Raises
    ------
    ConfigError
        ``host`` is reachable from other machines and ``token`` is empty.
    """
    if not token and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the viewer on {host!r} without a token: anyone who can "
            "reach that address could watch the signals. Pass --token T (or --token "
            "generate), or keep the default host 127.0.0.1."
        )


class _Limiter:
    """Logs a limit that was hit at most once per 10 s."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def warn(self, what: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(what, -1e9) >= 10.0:
            self._last[what] = now
            log.warning(msg, *args)


class _HTTPServer(http.server.ThreadingHTTPServer):
    """Counts connections (refusing beyond the limit) and can cut them all."""

    daemon_threads = False  # server_close() joins every handler: none outlives close()
    block_on_close = True
    viewer: ViewerServer

    def __init__(self, addr: tuple[str, int], handler: type, viewer: ViewerServer):
        self.viewer = viewer
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            full = len(self._conns) >= self.viewer.max_connections
            if not full:
                self._conns.add(request)
        if full:
            self.viewer.limits.warn(
                "conn", "viewer: %d connections open (the limit); refusing more",
                self.viewer.max_connections,
            )  # fmt: skip
            try:
                request.settimeout(1.0)
                body = f"too many connections to the viewer (limit {self.viewer.max_connections})"
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                    b"Content-Type: text/plain\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body.encode()
                )  # fmt: skip
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def cut_all(self) -> None:
        """Shut every open connection down (their threads then end promptly)."""
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class ViewerServer:
    """The ``dpshm view`` server of one namespace.

    Parameters
    ----------
    namespace : str
        The supervisor's namespace.
    host : str
        Address to bind (default 127.0.0.1); any other needs ``token``.
    port : int
        TCP port (default 7091; 0 picks a free one, read :attr:`port`).
    token : str, optional
        Required from every client when set (cookie or ``?token=``).
    supervisor_port : int, optional
        Port of the supervisor's command server on 127.0.0.1, for the workers
        panel (``LIST_WORKERS``); ``None`` (default): the one the supervisor
        lists in its registry, if it serves one.
    supervisor_token : str, optional
        Token of that command server, if it has one.
    max_connections, max_event_clients : int
        Connection limits (see the module docstring).

    Raises
    ------
    ConfigError
        A non-loopback ``host`` without ``token``.
    OSError
        The port cannot be bound (the message says which and what to do).
    """

    _httpd: _HTTPServer | None = None
    _thread: threading.Thread | None = None

    def __init__(
        self,
        namespace: str,
        host: str = DEFAULT_VIEW_HOST,
        port: int = DEFAULT_VIEW_PORT,
        token: str | None = None,
        *,
        supervisor_port: int | None = None,
        supervisor_token: str | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_event_clients: int = MAX_EVENT_CLIENTS,
    ):
        check_view_bind(host, token)
        if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{1,200}", token):
            raise ConfigError(
                "--token must be 1 to 200 of the characters A-Z a-z 0-9 . _ ~ - (it travels "
                "in a URL and a cookie); --token generate makes one"
            )
        self.namespace, self.host, self.token = namespace, host, token or None
        self.max_connections, self.max_event_clients = max_connections, max_event_clients
        self.limits = _Limiter()
        self.stopping = threading.Event()
        self.started = time.time()  # tells a page that reconnects whether the viewer restarted
        self._streams: Counter[str] = Counter()  # open event streams per kind
        self._streams_lock = threading.Lock()
        self._table: tuple[float, dict[str, Any]] = (0.0, {})
        self._table_lock = threading.Lock()
        self.book = StreamBook(namespace)
        self.workers = WorkerPoll(supervisor_port, supervisor_token, endpoints=self.book.endpoints)
        try:
            self._httpd = _HTTPServer((host, port), _Handler, self)
        except OSError as exc:
            self.book.close()
            raise OSError(
                f"cannot serve the viewer on {host}:{port}: {exc.strerror or exc}. Another "
                "`dpshm view` may run there: open it, or pass --port N (0 = any free port)."
            ) from None
        self.port: int = self._httpd.server_address[1]
        self.logs = LogTail(namespace)
        names = ("127.0.0.1", "localhost", "[::1]")
        self.allowed_hosts = {f"{h}:{self.port}" for h in names}
        self.check_host = is_loopback(host)  # else the token protects it

    @property
    def url(self) -> str:
        """Where to open the page (with ``?token=`` when one is needed)."""
        host = self.host if self.host not in ("0.0.0.0", "::", "") else socket.gethostname()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    @property
    def cookie_name(self) -> str:
        """Cookie holding the token (per port: cookies ignore the port)."""
        return f"dpshm_view_{self.port}"

    # -- shared state -------------------------------------------------------------------
    def table(self) -> dict[str, Any]:
        """The stream table, computed at most every ``STATUS_EVERY_S / 2`` for all clients."""
        with self._table_lock:
            t, table = self._table
            if time.monotonic() - t >= STATUS_EVERY_S / 2:
                table = self.book.table()
                self._table = (time.monotonic(), table)
            return table

    def stream_slot(self, kind: str) -> bool:
        """Take a slot for an event stream of ``kind`` (``"events"``, ``"trace"``).

        False when :attr:`max_event_clients` of that kind are open.
        """
        with self._streams_lock:
            if self._streams[kind] >= self.max_event_clients:
                return False
            self._streams[kind] += 1
            return True

    def release_stream_slot(self, kind: str) -> None:
        """Give back a slot taken with :meth:`stream_slot`."""
        with self._streams_lock:
            self._streams[kind] -= 1

    def open_streams(self, kind: str = "events") -> int:
        """Event streams of ``kind`` open now."""
        return self._streams[kind]

    # -- running ------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Serve until :meth:`close` (from another thread or a signal handler)."""
        httpd = self._httpd
        if httpd is not None:
            httpd.serve_forever(poll_interval=0.25)

    def start(self) -> ViewerServer:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="dpshm-view", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, end every connection, detach the rings (idempotent)."""
        self.stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            thread, self._thread = self._thread, None
            if thread is not None:
                httpd.shutdown()  # returns once serve_forever has stopped (<= 0.25 s)
                join_thread(thread, 5.0)
            httpd.cut_all()  # idle keep-alive reads and event streams end now
            httpd.server_close()  # joins the handler threads
        self.logs.close()
        self.workers.close()
        self.book.close()

    def __enter__(self) -> ViewerServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_token() -> str:
    """A random token for ``dpshm view --token generate``."""
    return secrets.token_urlsafe(18)


def _static(name: str) -> bytes:
    return (importlib.resources.files("dpshm.viewer") / "static" / name).read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms ACK delay
    timeout = IDLE_TIMEOUT_S
    server_version = "dpshm-view"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):  # formatting it costs a poll ~5 % for nothing
            super().log_request(code, size)

    # -- plumbing -----------------------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, code: int = 200) -> None:
        self._send(code, to_json_line(obj).encode(), "application/json")

    def _error(self, code: int, msg: str) -> None:
        self._json({"error": msg}, code)

    def _refuse_method(self) -> None:
        self.close_connection = True
        self._error(405, f"{self.command} refused: the viewer is read-only (GET only)")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _refuse_method

    # -- checks -------------------------------------------------------------------------
    def _checks(self, query: dict[str, str]) -> bool:
        viewer = self.server.viewer
        if len(self.requestline) > MAX_URL:
            self.close_connection = True
            self._error(414, f"request line longer than {MAX_URL} bytes")
            return False
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or self.headers.get(
            "Transfer-Encoding"
        ):
            self.close_connection = True
            self._error(400, "the viewer takes no request bodies")
            return False
        if viewer.check_host and self.headers.get("Host", "") not in viewer.allowed_hosts:
            viewer.limits.warn(
                "host", "viewer: refused a request for Host %r (allowed: %s)",
                self.headers.get("Host"), sorted(viewer.allowed_hosts),
            )  # fmt: skip
            self.close_connection = True
            self._error(
                421,
                f"Host {self.headers.get('Host')!r} is not this viewer's address; open "
                f"http://127.0.0.1:{viewer.port}/",
            )
            return False
        if viewer.token is not None and not self._authorised(query):
            self.close_connection = True
            self._error(
                401,
                "this viewer needs its token: open the URL `dpshm view` printed "
                "(it ends in ?token=...)",
            )
            return False
        return True

    def _authorised(self, query: dict[str, str]) -> bool:
        token = self.server.viewer.token or ""
        given = query.get("token")
        if given is None:
            name = self.server.viewer.cookie_name + "="
            for part in self.headers.get("Cookie", "").split(";"):
                part = part.strip()
                if part.startswith(name):
                    given = part[len(name) :]
        return given is not None and hmac.compare_digest(given.encode(), token.encode())

    # -- routes -------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            query = dict(parse_qsl(url.query, max_num_fields=16))
        except ValueError as exc:
            self._error(400, f"bad query: {exc}")
            return
        if not self._checks(query):
            return
        route = _ROUTES.get(url.path)
        if route is None and url.path in STATIC:
            route = _Handler._static_file
        if route is None:
            self._error(404, f"no such page {url.path!r}; the viewer is at /")
            return
        try:
            route(self, url.path, query)
        except ViewerError as exc:
            self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except DpshmError as exc:
            self._error(500, f"{type(exc).__name__}: {exc}")

    def _static_file(self, path: str, query: dict[str, str]) -> None:
        viewer = self.server.viewer
        if path == "/" and viewer.token is not None and "token" in query:
            # the token leaves the address bar (and the history) for an HttpOnly cookie
            cookie = f"{viewer.cookie_name}={viewer.token}; Path=/; HttpOnly; SameSite=Strict"
            self._send(303, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
            return
        name, ctype = STATIC[path]
        self._send(200, _static(name), f"{ctype}; charset=utf-8")

    def _streams(self, path: str, query: dict[str, str]) -> None:
        self._json(self.server.viewer.table())

    def _window(self, path: str, query: dict[str, str]) -> None:
        _, body = self.server.viewer.book.window(WindowRequest.from_query(query))
        self._send(200, body, "application/octet-stream")

    def _markers(self, path: str, query: dict[str, str]) -> None:
        key = query.get("key")
        if not key:
            raise ViewerError("markers request without key=")
        n = query.get("n", "50")
        if not n.isdigit():
            raise ViewerError(f"n={n!r} is not a count")
        self._json(self.server.viewer.book.markers(key, int(n)))

    def _logs(self, path: str, query: dict[str, str]) -> None:
        since = query.get("since", "0")
        if not since.isdigit():
            raise ViewerError(f"since={since!r} is not a record number")
        seq, recs = self.server.viewer.logs.since(int(since))
        self._json({"seq": seq, "records": recs})

    def _workers(self, path: str, query: dict[str, str]) -> None:
        self._json(self.server.viewer.workers.get())

    def _events(self, path: str, query: dict[str, str]) -> None:
        self._event_stream("events", self._status_loop)

    def _trace(self, path: str, query: dict[str, str]) -> None:
        req = WindowRequest.from_query(query)  # bad parameters: 400 before the stream opens
        self._event_stream("trace", lambda viewer, send: self._trace_loop(viewer, send, req))

    def _event_stream(self, kind: str, loop: Callable[[ViewerServer, Callable], None]) -> None:
        """Serve one event stream of ``kind`` (each kind has its own slot limit)."""
        viewer = self.server.viewer
        if not viewer.stream_slot(kind):
            viewer.limits.warn(
                kind, "viewer: %d %s streams open (the limit); refusing another",
                viewer.max_event_clients, kind,
            )  # fmt: skip
            self.close_connection = True
            self._error(
                503,
                f"too many open viewer pages (limit {viewer.max_event_clients}); close one",
            )
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.connection.settimeout(10.0)  # a page that stops reading is dropped
            loop(viewer, _event_writer(self.wfile))
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass
        finally:
            viewer.release_stream_slot(kind)
            self.close_connection = True

    @staticmethod
    def _status_loop(viewer: ViewerServer, send: Callable[[str, Any], None]) -> None:
        hello = {"namespace": viewer.namespace, "port": viewer.port, "started": viewer.started}
        send("hello", hello)
        seq, workers, next_workers = 0, None, 0.0
        while not viewer.stopping.is_set():
            send("streams", viewer.table())
            seq, recs = viewer.logs.since(seq)
            if recs:
                send("logs", recs)
            if time.monotonic() >= next_workers:
                next_workers = time.monotonic() + WORKERS_EVERY_S
                now = viewer.workers.get()
                if now != workers:
                    workers = now
                    send("workers", now)
            viewer.stopping.wait(STATUS_EVERY_S)

    @staticmethod
    def _trace_loop(viewer: ViewerServer, send: Callable, req: WindowRequest) -> None:
        """Push the window's new columns every :data:`TRACE_EVERY_S` (see :mod:`.trace`).

        Each frame is the base64 of a binary frame: one wake-up per frame, no
        request to parse, nothing sent when nothing is new.
        """
        cursor: TraceCursor | None = None
        nxt = time.monotonic()
        stopping, sleep, monotonic = viewer.stopping, time.sleep, time.monotonic
        while not stopping.is_set():
            try:
                if cursor is None:
                    cursor = TraceCursor(viewer.book, req, TRACE_EVERY_S)
                body = cursor.frame()
            except ViewerError as exc:  # the stream went away (or moved): say so, retry
                send("problem", {"error": str(exc)})
                cursor = None
                stopping.wait(1.0)
                continue
            if body is not None:
                send("window", base64.b64encode(body), raw=True)
            nxt += TRACE_EVERY_S
            now = monotonic()
            if nxt > now:
                sleep(nxt - now)  # at most one frame late to see `stopping`
            else:
                nxt = now


def _event_writer(wfile: Any) -> Callable[..., None]:
    def send(event: str, data: Any, raw: bool = False) -> None:
        """One event; ``raw``: ``data`` is its ASCII bytes (a frame's base64), sent as is."""
        text = data if raw else to_json_line(data).encode()
        wfile.write(b"".join((b"event: ", event.encode(), b"\ndata: ", text, b"\n\n")))
        wfile.flush()

    return send


_ROUTES: dict[str, Callable[[_Handler, str, dict[str, str]], None]] = {
    "/api/streams": _Handler._streams,
    "/api/window": _Handler._window,
    "/api/markers": _Handler._markers,
    "/api/logs": _Handler._logs,
    "/api/workers": _Handler._workers,
    "/api/events": _Handler._events,
    "/api/trace": _Handler._trace,
}
