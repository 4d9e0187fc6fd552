"""The ZeroMQ bus: head updates and log records over real sockets."""

from __future__ import annotations

import logging
import shutil

import pytest
import zmq
from helpers import wait_connected, wait_until

from dpshm.errors import ProtocolError
from dpshm.shm import bus, registry


@pytest.fixture(params=["ipc", "tcp"])
def endpoint(request, unique_name):
    if request.param == "tcp":
        yield "tcp://127.0.0.1:*"
        return
    d = registry.namespace_dir(unique_name)
    yield f"ipc://{d}/heads.ipc"
    shutil.rmtree(d, ignore_errors=True)


def _connect(pub, sub, stream="s"):
    """Publish probes until the subscription has reached the publisher."""
    assert wait_connected(sub, lambda: pub.publish(stream, 0, 0, 0.0))
    sub.drain()


def test_roundtrip_filter_and_drain(endpoint):
    with bus.HeadPublisher(endpoint) as pub:
        assert not pub.endpoint.endswith("*")
        with (
            bus.HeadSubscriber(pub.endpoint, ["eeg"]) as sub,
            bus.HeadSubscriber(pub.endpoint) as every,
        ):
            _connect(pub, sub, "eeg")
            _connect(pub, every, "eeg")
            for i in range(1, 51):
                pub.publish("eeg", i * 10, 2, i / 100)
                pub.publish("eeg2", i, 1, 0.0)  # prefix of another stream: filtered
            got = wait_until(lambda: sub.wait(0.5), 5)
            # everything queued is drained in one go, newest kept
            while got["eeg"].head != 500:
                got.update(sub.wait(0.5))
            assert set(got) == {"eeg"}
            assert got["eeg"] == bus.HeadUpdate("eeg", 500, 2, 0.5)
            assert sub.wait(0.01) == {}
            latest = {}
            while len(latest) < 2 or latest["eeg2"].head != 50:
                latest.update(wait_until(lambda: every.wait(0.5), 5))
            assert latest["eeg"].head == 500


def test_heads_are_sent_only_while_someone_subscribes(endpoint):
    with bus.HeadPublisher(endpoint) as pub:
        assert not pub.subscribed
        assert pub.publish("eeg", 1, 1, 0.0) is False  # nobody listens: nothing encoded
        with bus.HeadSubscriber(pub.endpoint, ["eeg"]) as sub:
            wait_until(lambda: pub.subscribed, 5)
            assert pub.publish("eeg", 2, 1, 0.0) is True
            assert wait_until(lambda: sub.wait(0.2), 5)["eeg"].head == 2
        wait_until(lambda: not pub.subscribed, 5)  # its unsubscription reached the publisher
        assert pub.publish("eeg", 3, 1, 0.0) is False


def test_close_is_idempotent_and_leaves_context(endpoint):
    ctx = zmq.Context()
    try:
        pub = bus.HeadPublisher(endpoint, ctx=ctx)
        sub = bus.HeadSubscriber(pub.endpoint, ctx=ctx)
        for obj in (pub, sub, pub, sub):
            obj.close()
        assert not ctx.closed
        assert pub.publish("x", 1, 1, 1.0) is False
        with pytest.raises(ValueError, match="closed"):
            sub.wait(0.01)
    finally:
        ctx.term()


def test_bind_conflict_is_clear(unique_name):
    with bus.HeadPublisher("tcp://127.0.0.1:*") as pub, pytest.raises(OSError, match="bind"):
        bus.HeadPublisher(pub.endpoint)


def test_malformed_frame():
    with pytest.raises(ProtocolError, match="malformed"):
        bus.decode_head(b"hx\0\xc1")
    u = bus.HeadUpdate("a", 1, 2, 3.5)
    assert bus.decode_head(bus.encode_head(u)) == u


def test_log_handler_publishes_dareplane_json():
    pytest.importorskip("dpshm.dareplane.logs")
    with bus.LogPublisher("tcp://127.0.0.1:*") as pub, bus.LogSubscriber(pub.endpoint) as sub:
        logger = logging.getLogger("dpshm.test.bus")
        handler = pub.handler()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            assert wait_connected(sub, lambda: logger.info("probe"))
            sub.recv(0.01)
            logger.warning("value %s and %s", 1, "two")
            recs = []
            while not any(r.get("levelname") == "WARNING" for r in recs):
                recs += wait_until(lambda: sub.recv(0.5), 5)
        finally:
            logger.removeHandler(handler)
        rec = next(r for r in recs if r["levelname"] == "WARNING")
        assert rec["name"] == "dpshm.test.bus"
        assert rec["msg"] == "value 1 and two"  # the Dareplane wire form: formatted, no args
        assert rec["args"] == []
