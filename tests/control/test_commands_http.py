"""The supervisor's command server refuses HTTP: a web page cannot stop it or start a worker."""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request

import pytest
from helpers import TESTS
from worker_targets import Client, make_spec

from dpshm.control.commands import Frontend, SupervisorServer
from dpshm.control.workers import WorkerManager


@pytest.fixture
def supervisor_server():
    manager = WorkerManager(
        {"idle_t": make_spec("idle_t", "worker_targets:wait_for_stop", "thread")},
        resolve=lambda s: s,
        search_path=str(TESTS),
        grace_s=1.0,
    )
    closed = threading.Event()
    server = SupervisorServer(Frontend(manager, list), 0, on_close=closed.set)
    server.init_server()
    th = threading.Thread(target=server.start_listening, daemon=True)
    th.start()
    yield server, manager, closed
    server.shutdown()
    th.join(10)
    manager.close()


def test_http_close_and_start_worker_are_not_executed(supervisor_server) -> None:
    server, manager, closed = supervisor_server
    base = f"http://127.0.0.1:{server.port}"
    for path in ("/;CLOSE;", "/;START_WORKER|idle_t|;"):
        with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
            urllib.request.urlopen(base + path, timeout=5)
    assert not closed.is_set()
    assert manager.status() == []
    c = Client(server.port)
    try:
        assert c.ask_json("LIST_WORKERS")["workers"] == []
    finally:
        c.close()
