"""The viewer's endpoints over plain HTTP: a real supervisor (``dpshm up`` child
process) sharing real LSL outlets on loopback, the viewer reading its rings."""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import socket
import threading
import time

import numpy as np
import pytest
from helpers import wait_until
from lsl_util import ramp
from viewer_util import get, supervise

from dpshm.errors import ConfigError
from dpshm.shm import registry
from dpshm.shm.ring import SharedRing
from dpshm.viewer import ViewerServer, check_view_bind
from dpshm.viewer.columns import unpack_window
from dpshm.viewer.data import StreamBook, WindowRequest
from dpshm.viewer.server import TRACE_EVERY_S
from dpshm.viewer.trace import TraceCursor

pytestmark = pytest.mark.lsl


@contextlib.contextmanager
def pushing(outlet, n_ch: int, srate: float, chunk: int = 10):
    """Push a ramp (row i: i * 10 + channel) at ``srate`` from a thread."""
    stop = threading.Event()

    def run():
        i = 0
        while not stop.wait(chunk / srate):
            outlet.push_chunk(ramp(i, chunk, n_ch))
            i += chunk

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


class Events:
    """A reader of the viewer's server-sent events (bounded by socket timeouts)."""

    def __init__(self, port: int, path: str = "/api/events"):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", path)
        self.resp = self.conn.getresponse()
        self.seen: dict[str, list] = {}

    def until(self, pred, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        event, data = None, []
        while time.monotonic() < deadline:
            line = self.resp.fp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif not line and event:
                text = "\n".join(data)
                self.seen.setdefault(event, []).append(
                    text if event == "window" else json.loads(text)
                )
                event, data = None, []
                if pred(self.seen):
                    return self.seen
        raise AssertionError(f"events never satisfied the condition; got {list(self.seen)}")

    def close(self):
        self.resp.close()  # the response holds the socket too
        self.conn.close()


def _rows(port: int) -> dict[str, dict]:
    status, _, body = get(port, "/api/streams")
    assert status == 200
    return {s["name"]: s for s in json.loads(body)["streams"]}


def test_endpoints_against_a_supervisor(procs, outlets):
    names = ["Fz", "Cz", "Pz", "Oz"]
    sig = outlets.make(n_channels=4, srate=200.0, channel_names=names)
    mk_name = sig.spec.name + "_mk"
    ns = procs[0]
    with pushing(sig, 4, 200.0):
        sup = supervise(procs, sig.spec.name, mk_name, port=True)  # `dpshm up --port 0`
        cmd_port = sup.port()
        # the command server's address is in the registry (whether it needs a token, not
        # the token): the viewer finds it there, no --supervisor-port needed
        endpoints = sup.ready().endpoints
        assert endpoints["commands"] == f"tcp://127.0.0.1:{cmd_port}"
        assert endpoints["commands_auth"] == "none"
        with ViewerServer(ns, port=0).start() as v:
            port = v.port
            wait_until(lambda: _rows(port).get(sig.spec.name, {}).get("head", 0) > 600, 20)
            events = Events(port)
            try:
                # the log tail is subscribed: a stream that appears now is logged to the page
                wait_until(lambda: v.logs.endpoint, 10)
                mk = outlets.make(name=mk_name, type="Markers", n_channels=1, srate=0.0,
                                  channel_format="string")  # fmt: skip
                seen = events.until(
                    lambda s: (
                        any(mk_name in r["message"] for b in s.get("logs", []) for r in b)
                        and any(
                            {sig.spec.name, mk_name} <= {x["name"] for x in t["streams"]}
                            for t in s.get("streams", [])
                        )
                        and s.get("workers")
                    )
                )
            finally:
                events.close()
            assert seen["hello"][0]["namespace"] == ns
            workers = seen["workers"][-1]
            assert workers["enabled"] and workers["error"] is None
            assert workers["server"] == f"127.0.0.1:{cmd_port}"
            assert workers["workers"] == [] and workers["declared"] == {}
            # the viewer's polling stays out of the supervisor's INFO log: one connection,
            # and LIST_WORKERS is a quiet (DEBUG) command
            assert "LIST_WORKERS" not in sup.output
            assert sup.output.count("connected to dpshm") == 1, sup.output
            row = seen["streams"][-1]["streams"]
            sig_row = next(r for r in row if r["name"] == sig.spec.name)
            assert sig_row["channels"] == 4 and sig_row["srate"] == 200.0
            assert sig_row["stale"] is False and sig_row["writer_pid"] == sup.proc.pid

            for label in ("go-1", "go-2"):
                mk.push_sample([label])
            key = sig_row["key"]
            wait_until(lambda: _rows(port)[mk_name]["head"] >= 2, 10)

            # a decimated window: 2 s at 200 Hz on 100 columns = 4 samples per column
            q2 = f"key={key}&seconds=2&width=100"
            status, hdrs, body = get(port, f"/api/window?{q2}")
            assert status == 200 and hdrs["Content-Type"] == "application/octet-stream"
            h, times, mm = unpack_window(body)
            assert (h["spc"], h["window_cols"], h["n_channels"]) == (4, 100, 4)
            assert h["reset"] and h["channel_names"] == names
            assert h["n_cols"] == 100 and h["end_col"] - h["first_col"] == 100
            with SharedRing.attach(h["ring"]) as ring:  # the same columns, computed here
                d, _, first = ring.copy_range(h["first_col"] * 4, h["end_col"] * 4)
            assert first == h["first_col"] * 4
            block = d.reshape(100, 4, 4)
            np.testing.assert_array_equal(mm[:, :, 0], block.min(axis=1))
            np.testing.assert_array_equal(mm[:, :, 1], block.max(axis=1))
            # consecutive ramp rows: every column spans 3 steps of 10 in every channel
            np.testing.assert_array_equal(mm[:, :, 1] - mm[:, :, 0], 30.0)
            assert np.all(np.diff(times) > 0)
            labels = [m["label"] for m in h.get("markers", [])]
            assert labels[-2:] == ["go-1", "go-2"], h.get("markers")

            # the next poll gets only the columns completed since
            def newer():
                q = f"key={key}&seconds=2&width=100&since={h['end_col']}"
                b = get(port, f"/api/window?{q}")[2]
                nh, _, nmm = unpack_window(b)
                return (nh, nmm) if nh["n_cols"] else None

            nh, nmm = wait_until(newer, 10)
            assert nh["first_col"] == h["end_col"] and not nh["reset"]
            assert "channel_names" not in nh and nmm.shape[1:] == (4, 2)

            # what the page reads: the trace pushed as events, a reset frame (the whole
            # window), then only the columns completed since the frame before
            trace = Events(port, f"/api/trace?key={key}&seconds=2&width=100&nch=2")
            try:
                seen = trace.until(lambda s: len(s.get("window", [])) >= 4)
            finally:
                trace.close()
            bodies = [base64.b64decode(w) for w in seen["window"]]
            h0 = unpack_window(bodies[0])[0]
            frames = [unpack_window(b, h0["n_channels"]) for b in bodies]
            assert h0["reset"] and h0["n_cols"] == 100 and h0["channel_names"] == names[:2]
            assert h0["frame_s"] == TRACE_EVERY_S and h0["window_cols"] == 100
            assert [m["label"] for m in h0["markers"]][-2:] == ["go-1", "go-2"]
            for (a, _, _), (b, _, mmb) in itertools.pairwise(frames):
                assert b["first_col"] == a["end_col"] and "reset" not in b
                assert b["n_cols"] > 0 and mmb.shape == (b["n_cols"], 2, 2)
                assert "markers" not in b  # sent again only when they change
            # the columns assembled from the frames (as the page does) are those of one
            # full decimation of the same samples
            page = {h["first_col"] + i: (t[i], mm[i]) for h, t, mm in frames
                    for i in range(h["n_cols"])}  # fmt: skip
            fh, ft, fmm = unpack_window(get(port, f"/api/window?{q2}&nch=2")[2])
            both = range(fh["first_col"], min(fh["end_col"], frames[-1][0]["end_col"]))
            assert len(both) > 50, (fh, frames[-1][0])
            for c in both:
                assert page[c][0] == ft[c - fh["first_col"]]
                np.testing.assert_array_equal(page[c][1], fmm[c - fh["first_col"]])
            assert get(port, f"/api/trace?key={key}&seconds=0")[0] == 400

            # one channel range only
            s, _, b = get(port, f"/api/window?key={key}&seconds=1&width=50&ch0=2&nch=1")
            h1, _, mm1 = unpack_window(b)
            assert h1["channel_names"] == ["Pz"] and mm1.shape[1:] == (1, 2)

            # the marker stream itself
            s, _, b = get(port, f"/api/markers?key={_rows(port)[mk_name]['key']}")
            assert s == 200 and [m["label"] for m in json.loads(b)][-2:] == ["go-1", "go-2"]

            # refusals name the problem
            for path, code, word in [
                ("/api/window?key=nope", 400, "no stream with key 'nope'"),
                (f"/api/window?key={key}&seconds=nan", 400, "seconds='nan' is out of range"),
                (f"/api/window?key={key}&width=99999", 400, "width"),
                (f"/api/window?key={_rows(port)[mk_name]['key']}", 400, "markers"),
                (f"/api/window?key={key}&ch0=4", 400, "has 4 channels"),
                ("/../pyproject.toml", 404, "no such page"),
            ]:
                s, _, b = get(port, path)
                assert s == code and word in json.loads(b)["error"], (path, b)


def test_no_supervisor_limits_and_refusals(procs):
    ns = procs[0]
    with ViewerServer(ns, port=0, max_event_clients=1, max_connections=3).start() as v:
        port = v.port
        s, h, b = get(port, "/api/streams")
        table = json.loads(b)
        assert table["supervisor"] is None and "no dpshm supervisor runs" in table["problem"]
        assert "default-src 'none'" in h["Content-Security-Policy"]
        s, _, b = get(port, "/api/workers")
        error = json.loads(b)["error"]  # how to get one
        assert "no supervisor runs on this namespace" in error and "dpshm up --port 0" in error
        s, h, b = get(port, "/")
        assert s == 200 and b'<canvas id="trace"' in b
        assert h["Content-Type"].startswith("text/html")
        s, _, b = get(port, "/viewer.js")
        assert s == 200 and b"EventSource" in b
        # read-only: every other method is refused
        for method in ("POST", "PUT", "DELETE"):
            s, _, b = get(port, "/api/streams", method=method)
            assert s == 405 and "read-only" in json.loads(b)["error"]
        # DNS rebinding: a page under another name cannot read the viewer
        s, _, b = get(port, "/api/streams", {"Host": f"attacker.example:{port}"})
        assert s == 421 and "not this viewer's address" in json.loads(b)["error"]
        s, _, _ = get(port, "/api/streams", {"Host": f"localhost:{port}"})
        assert s == 200
        s, _, b = get(port, "/api/streams", {"Content-Length": "5"})
        assert s == 400 and "no request bodies" in json.loads(b)["error"]
        s, _, b = get(port, "/api/streams?" + "x" * 5000)
        assert s == 414

        # one event stream allowed: the second is refused with the limit named
        first = Events(port)
        try:
            first.until(lambda seen: "streams" in seen)
            assert v.open_streams("events") == 1
            s, _, b = get(port, "/api/events")
            assert s == 503 and "limit 1" in json.loads(b)["error"]
        finally:
            first.close()
        wait_until(lambda: v.open_streams("events") == 0, 5)

        # three connections allowed: a fourth is answered 503 at once
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            wait_until(lambda: len(v._httpd._conns) == 3, 5)
            s, _, b = get(port, "/api/streams")
            assert s == 503 and b"limit 3" in b
        finally:
            for c in idle:
                c.close()
        wait_until(lambda: get(port, "/api/streams")[0] == 200, 5)


def _workers(port: int) -> dict:
    return json.loads(get(port, "/api/workers")[2])


def _workers_when(port: int, pred) -> dict:
    """The viewer's workers panel once ``pred`` holds for it."""

    def panel():
        w = _workers(port)
        return w if pred(w) else None

    return wait_until(panel, 15)


def _workers_saying(port: int, word: str) -> dict:
    return _workers_when(port, lambda w: word in (w["error"] or ""))


def test_workers_panel_finds_the_command_server(procs, outlets, tmp_path):
    """The viewer finds the command server in the registry; without one the page says how
    to open one; a token-protected one asks for --supervisor-token; --supervisor-port wins."""
    ns = procs[0]
    sig = outlets.make(n_channels=1, srate=50.0)
    token = "tk-not-in-the-registry"
    with ViewerServer(ns, port=0).start() as v:
        sup = supervise(procs, sig.spec.name)  # no command server
        sup.ready()
        w = _workers_saying(v.port, "serves no command server")
        assert not w["enabled"] and "dpshm up --port 0" in w["error"]
        assert sup.stop() == 0
        cfg = tmp_path / "dpshm.toml"
        cfg.write_text(f'[server]\ntoken = "{token}"\n')
        sup2 = supervise(procs, sig.spec.name, port=True, args=("--config", str(cfg)))
        cmd_port = sup2.port()
        sup2.ready()
        text = (registry.namespace_dir(ns, create=False) / registry.REGISTRY_FILE).read_text()
        assert token not in text  # only that one is needed
        assert registry.read_registry(ns).endpoints["commands_auth"] == "token"
        w = _workers_saying(v.port, "needs a token")
        assert f"127.0.0.1:{cmd_port}" in w["error"] and "--supervisor-token" in w["error"]
    with ViewerServer(ns, port=0, supervisor_token=token).start() as v:
        w = _workers_when(v.port, lambda w: w["error"] is None)
        assert w["enabled"] and w["server"] == f"127.0.0.1:{cmd_port}" and w["workers"] == []
    with socket.socket() as s:  # a port nobody serves: the override is used, not the registry
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with ViewerServer(ns, port=0, supervisor_port=closed).start() as v:
        assert (
            f"no answer from the command server on 127.0.0.1:{closed}" in _workers(v.port)["error"]
        )


def test_token(procs):
    ns = procs[0]
    with pytest.raises(ConfigError, match="without a token"):
        check_view_bind("0.0.0.0", None)
    check_view_bind("127.0.0.1", None)
    with pytest.raises(ConfigError, match="--token must be 1 to 200 of the characters"):
        ViewerServer(ns, port=0, token="a b;c")
    with ViewerServer(ns, port=0, token="s3cret").start() as v:
        port = v.port
        assert v.url.endswith("/?token=s3cret")
        s, _, b = get(port, "/api/streams")
        assert s == 401 and "needs its token" in json.loads(b)["error"]
        assert get(port, "/api/streams?token=wrong")[0] == 401
        assert get(port, "/api/streams?token=s3cret")[0] == 200
        s, h, _ = get(port, "/?token=s3cret")  # the page: token -> cookie, address cleaned
        assert s == 303 and h["Location"] == "/"
        cookie = h["Set-Cookie"].split(";")[0]
        assert cookie == f"dpshm_view_{port}=s3cret" and "HttpOnly" in h["Set-Cookie"]
        assert get(port, "/", {"Cookie": cookie})[0] == 200
        assert get(port, "/api/streams", {"Cookie": f"dpshm_view_{port}=nope"})[0] == 401


def test_supervisor_restart_is_followed(procs, outlets):
    """The viewer outlives the supervisor: the page says it is gone, and the table and
    the trace come back (from the new rings) when a new one starts."""
    ns = procs[0]
    sig = outlets.make(n_channels=2, srate=100.0)
    with pushing(sig, 2, 100.0), ViewerServer(ns, port=0).start() as v:
        port = v.port
        sup = supervise(procs, sig.spec.name)
        name = sig.spec.name
        wait_until(lambda: _rows(port).get(name, {}).get("head", 0) > 50, 20)
        row = _rows(port)[name]
        trace = Events(port, f"/api/trace?key={row['key']}&seconds=1&width=50")
        try:
            seen = trace.until(lambda s: len(s.get("window", [])) >= 2)
            first_ring = unpack_window(base64.b64decode(seen["window"][0]))[0]["ring"]
            assert sup.stop() == 0  # a clean stop: rings and registry removed

            def gone():
                table = json.loads(get(port, "/api/streams")[2])
                return table["supervisor"] is None and "no dpshm supervisor" in table["problem"]

            wait_until(gone, 10)
            seen = trace.until(lambda s: "problem" in s)
            assert f"no stream with key {row['key']!r}" in seen["problem"][-1]["error"]
            before = len(seen["window"])
            sup2 = supervise(procs, sig.spec.name)
            wait_until(lambda: _rows(port).get(name, {}).get("writer_pid") == sup2.proc.pid, 20)
            row2 = _rows(port)[name]
            assert row2["key"] == row["key"]
            seen = trace.until(lambda s: len(s["window"]) > before + 1)
            frames = [unpack_window(base64.b64decode(w), 2)[0] for w in seen["window"][before:]]
            assert frames[0]["reset"] and frames[0]["ring"] != first_ring  # the new ring's
            assert not any("reset" in f for f in frames[1:])  # continued on it
        finally:
            trace.close()


def test_trace_sends_nothing_when_nothing_changed(procs, outlets):
    """A trace frame only when there is something new: a stream that stops pushing
    (its outlet still there, so not stale) gets no frames; new samples bring one."""
    ns = procs[0]
    sig = outlets.make(n_channels=3, srate=100.0)
    sup = supervise(procs, sig.spec.name)
    with pushing(sig, 3, 100.0):
        entry = sup.entry(sig.spec.name)
        wait_until(lambda: _head(ns, entry.ring) > 100, 20)
    with StreamBook(ns) as book:
        cursor = TraceCursor(book, WindowRequest(entry.key, 1.0, 50), frame_s=0.1)
        h, _, mm = unpack_window(cursor.frame())
        assert h["reset"] and h["frame_s"] == 0.1 and mm.shape == (h["n_cols"], 3, 2)
        ends = [h["end_col"]]

        def quiet():  # what the supervisor had not yet written comes first
            body = cursor.frame()
            if body is not None:
                ends.append(unpack_window(body, 3)[0]["end_col"])
            return body is None

        wait_until(quiet, 10)
        assert [cursor.frame() for _ in range(12)] == [None] * 12  # a registry look too
        sig.push_chunk(ramp(0, 10, 3))  # five columns (spc = 2)
        h2, _, mm2 = unpack_window(wait_until(cursor.frame, 10), 3)
        assert "reset" not in h2 and h2["first_col"] == ends[-1]
        assert h2["n_cols"] >= 1 and mm2.shape == (h2["n_cols"], 3, 2)


def _head(ns: str, ring_name: str) -> int:
    with SharedRing.attach(ring_name) as ring:
        return ring.head
