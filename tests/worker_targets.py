"""Worker targets used by the worker and frontend tests (imported by name, also
inside spawned worker processes), and the tests' helpers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time


def wait_for_stop(ctx):
    """Log, then wait for the stop event; report the streams' shapes."""
    ctx.logger.info("worker %s up in pid %d with kwargs %s", ctx.id, os.getpid(), ctx.kwargs)
    ctx.stop_event.wait(ctx.kwargs.get("max_s", 60))
    ctx.logger.info("worker %s stopping", ctx.id)


def fail(ctx):
    """Raise at once."""
    raise ValueError(f"boom from {ctx.id}")


def exit_with(ctx):
    """Exit the (process) worker with kwargs['code']."""
    sys.exit(ctx.kwargs["code"])


def ignore_stop(ctx):
    """A thread that ignores its stop event for kwargs['sleep_s']."""
    time.sleep(ctx.kwargs["sleep_s"])


def spawn_and_ignore_stop(ctx):
    """Start a child process, then ignore the stop event (needs the tree kill)."""
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ctx.logger.info("child pid %d", child.pid)
    time.sleep(60)


def finish(ctx):
    """Return at once (a worker that finishes by itself)."""
    ctx.logger.info("done")


def read_windows(ctx):
    """Write the newest window of every stream, and the process facts, to kwargs['out'].

    Waits until every stream holds at least kwargs['n'] samples.
    """
    n = ctx.kwargs["n"]
    deadline = time.monotonic() + 10
    result = {}
    while not ctx.stop_event.is_set() and time.monotonic() < deadline:
        ready = all(v.head >= ctx.kwargs["head"] for v in ctx.streams.values())
        if ready:
            for name, view in ctx.streams.items():
                data, ts = view.get_window(n_samples=n, copy=True)
                result[name] = {"data": data.tolist(), "ts": ts.tolist(), "head": view.head}
            break
        ctx.stop_event.wait(0.01)
    result["pylsl_loaded"] = "pylsl" in sys.modules
    result["pid"] = os.getpid()
    tmp = ctx.kwargs["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, ctx.kwargs["out"])
    ctx.logger.info("reader %s wrote its windows", ctx.id)
    ctx.stop_event.wait(ctx.kwargs.get("linger_s", 0))


#: what a client may set for ``read_windows`` (as ``[workers.reader.params]`` would declare)
READER_PARAMS = {
    "n": {"type": "int", "min": 1, "max": 100000},
    "head": {"type": "int", "min": 0, "max": 10**9},
    "out": {"type": "str", "max_len": 4096},
    "linger_s": {"type": "float", "min": 0.0, "max": 120.0},
}


def make_spec(
    name,
    target,
    mode="thread",
    kwargs=None,
    restart="off",
    max_restarts=3,
    backoff_s=1.0,
    params=None,
):
    """A worker declaration as ``dpshm.config`` builds it from ``[workers.NAME]``
    (``params`` as its ``[workers.NAME.params]`` table)."""
    from types import MappingProxyType

    from dpshm.config import RestartPolicy, WorkerConfig
    from dpshm.params import parse_spec

    return WorkerConfig(
        name=name,
        target=target,
        mode=mode,
        kwargs=MappingProxyType(dict(kwargs or {})),
        restart=RestartPolicy(policy=restart, max_restarts=max_restarts, backoff_s=backoff_s),
        params=MappingProxyType(
            {k: parse_spec(k, v, f"params.{k}") for k, v in (params or {}).items()}
        ),
    )


class LogCollector(logging.Handler):
    """Keeps every record that reaches it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def messages(self, prefix=""):
        return [r.getMessage() for r in list(self.records) if r.name.startswith(prefix)]

    def has(self, worker_id, text):
        return any(text in s for s in self.messages(f"dpshm.worker.{worker_id}"))


@contextlib.contextmanager
def collect_logs(name="dpshm.worker", level=logging.INFO):
    """Collect the records of logger ``name`` (workers' records by default)."""
    h = LogCollector()
    lg = logging.getLogger(name)
    old = lg.level
    lg.addHandler(h)
    lg.setLevel(level)
    try:
        yield h
    finally:
        lg.removeHandler(h)
        lg.setLevel(old)


class Client:
    """A control-room-style client: one command per send, ';'-terminated."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.banner = self.line()

    def line(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf.split(b"\n", 1)
        return out.decode()

    def raw(self, n_min: int = 1) -> str:
        while len(self.buf) < n_min:
            self.buf += self.sock.recv(65536)
        out, self.buf = self.buf, b""
        return out.decode()

    def send(self, cmd: str) -> None:
        self.sock.sendall(cmd.encode() + b";")

    def ask(self, cmd: str) -> str:
        self.send(cmd)
        return self.line()

    def ask_json(self, cmd: str):
        reply = self.ask(cmd)
        assert not reply.startswith("ERROR"), reply
        return json.loads(reply)

    def close(self):
        self.sock.close()


def publish_ramp(ctx):
    """Publish kwargs['name'] (2 channels) and push kwargs['n'] samples ``i, -i``;
    then wait for the stop event (the publisher is closed when the worker ends)."""
    import numpy as np

    pub = ctx.publish_stream(ctx.kwargs["name"], 2, 100.0, type="Ramp")
    i = np.arange(ctx.kwargs["n"], dtype=np.float32)
    pub.push_chunk(np.stack([i, -i], axis=1), timestamps=i.astype(np.float64))
    ctx.logger.info("published %s in pid %d", pub.ring.name, os.getpid())
    ctx.stop_event.wait(60)
