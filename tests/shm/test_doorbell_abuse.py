"""Doorbell floods: only the supervisor's own uid subscribes, subscriptions are
bounded, junk costs no memory, and a real consumer is still woken.

The server runs in this process (real abstract UNIX sockets); the second user
is a forked child switched to uid ``nobody`` (root only; skipped otherwise).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import psutil
import pytest
from helpers import OTHER_UID, as_other_user, wait_until

from dpshm.shm import doorbell
from dpshm.shm.doorbell import BELL, SUBSCRIBE, Doorbell, DoorbellServer

pytestmark = pytest.mark.skipif(not doorbell.AVAILABLE, reason="doorbells need Linux")

KEY = "eeg.0123abcd"
N_SOCKETS = 2000


@pytest.fixture
def server(unique_name):
    srv = DoorbellServer(
        doorbell.control_address(unique_name, "abuse"),
        max_subscribers=50,
        accept=lambda key: key == KEY,
    )
    yield srv
    srv.close()


def _flood(address: str, n_sockets: int, keys_per_socket: int, key: str | None, close: bool):
    """Subscribe from ``n_sockets`` sockets (``key``, or unique 400-byte junk keys)."""
    ctl = b"\0" + address.encode()
    socks = []
    sent = 0
    for i in range(n_sockets):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(b"")
        s.settimeout(5.0)  # the server's queue is short: blocking sends pace the flood
        for j in range(keys_per_socket):
            name = key if key is not None else f"junk-{i}-{j}-".ljust(400, "x")
            s.sendto(SUBSCRIBE + name.encode(), ctl)
            sent += 1
        if close:
            s.close()
        else:
            socks.append(s)
    return sent, socks


@pytest.mark.skipif(os.getuid() != 0, reason="a second uid needs root")
def test_another_uid_cannot_subscribe_nor_learn_the_timing(server):
    stop = threading.Event()

    def ring_forever():  # the supervisor writing: a subscriber would hear every write
        g = 0
        while not stop.is_set():
            g += 1
            server.ring(KEY, g)
            stop.wait(0.005)

    ringer = threading.Thread(target=ring_forever, daemon=True)
    ringer.start()
    address = server.address

    def intruder() -> dict:  # as uid 65534
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(b"")
        s.settimeout(0.05)
        bells = 0
        for _ in range(20):  # re-subscribing every 50 ms, as a real consumer would
            s.sendto(SUBSCRIBE + KEY.encode(), b"\0" + address.encode())
            try:
                while s.recv(BELL.size):
                    bells += 1
            except (TimeoutError, BlockingIOError):
                pass
        return {"bells": bells, "uid": os.getuid()}

    try:
        got = as_other_user(intruder)
        assert got == {"bells": 0, "uid": OTHER_UID}
        assert server.subscribers() == 0
        assert server.refused["uid"] >= 20
        with Doorbell(server.address, KEY) as mine:  # our own uid still subscribes
            wait_until(lambda: server.subscribers(KEY) == 1, 5)
            assert mine.wait(2.0) is not None
    finally:
        stop.set()
        ringer.join(5)


def test_subscriptions_are_capped_logged_and_freed(server, caplog):
    caplog.set_level(logging.WARNING, logger="dpshm.shm.doorbell")
    sent, socks = _flood(server.address, N_SOCKETS, 1, KEY, close=False)
    wait_until(lambda: server.refused["full"] == sent - 50, 20)
    assert server.subscribers() == server.subscribers(KEY) == 50
    full = [r for r in caplog.records if "max_subscribers" in r.getMessage()]
    assert 1 <= len(full) <= 2, [r.getMessage() for r in full]  # rate-limited, not 1950 lines
    # a real consumer arriving now is refused too (and re-subscribes periodically) ...
    with Doorbell(server.address, KEY) as real:
        wait_until(lambda: server.refused["full"] == sent - 49, 5)
        assert server.ring(KEY, 1) == 50
        for s in socks:  # ... until the flooders go: ringing drops their dead addresses
            s.close()
        assert server.ring(KEY, 2) == 0 and server.subscribers() == 0
        assert real.subscribe()
        wait_until(lambda: server.subscribers(KEY) == 1, 5)
        real.drain()
        assert server.ring(KEY, 3) == 1
        assert real.wait(2.0) == 3


def test_junk_subscriptions_cost_no_memory(server):
    rss = psutil.Process().memory_info().rss
    sent, _ = _flood(server.address, N_SOCKETS, 20, None, close=True)  # 40 000 x 400 B keys
    wait_until(lambda: server.refused["unknown"] == sent, 60)
    grown = psutil.Process().memory_info().rss - rss
    assert server.subscribers() == 0
    assert grown < 8e6, f"RSS grew by {grown / 1e6:.1f} MB for {sent} junk subscriptions"
    with Doorbell(server.address, KEY) as real:  # and the bell still works
        wait_until(lambda: server.subscribers(KEY) == 1, 5)
        server.ring(KEY, 7)
        assert real.wait(2.0) == 7


def test_the_cap_is_validated(unique_name):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_subscribers must be >= 1"):
            DoorbellServer(doorbell.control_address(unique_name, "x"), max_subscribers=bad)
    with pytest.raises(TypeError, match="max_subscribers must be an int"):
        DoorbellServer(doorbell.control_address(unique_name, "x"), max_subscribers=2.5)


def test_a_flood_is_read_at_a_bounded_rate(server):
    """The control thread reads at most MAX_MESSAGES_PER_S (an upper bound on its
    work, whatever the sender does; a slow machine only reads fewer)."""
    ctl = b"\0" + server.address.encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"")
    s.setblocking(False)
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < 1.0:
        try:
            s.sendto(SUBSCRIBE + b"junk", ctl)
            sent += 1
        except BlockingIOError:
            time.sleep(0.0001)
    elapsed = time.monotonic() - t0
    s.close()
    read = server.refused["unknown"]
    assert read <= doorbell.MAX_MESSAGES_PER_S * (elapsed + 2 * doorbell._SLICE_S) + 20
    assert sent >= read


@pytest.mark.skipif(os.getuid() != 0, reason="a second uid needs root")
def test_nobody_else_can_ring_a_consumer(server):
    """A consumer's socket is connected to the supervisor's: fake bells from any
    other socket (another user's, or one's own) are refused by the kernel."""
    with Doorbell(server.address, KEY) as mine:
        wait_until(lambda: server.subscribers(KEY) == 1, 5)
        target = mine._sock.getsockname()  # visible to all users in /proc/net/unix

        def forge() -> str:  # as uid 65534
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                s.sendto(BELL.pack(99), target)
            except OSError as exc:
                return type(exc).__name__
            return "sent"

        assert as_other_user(forge) == "PermissionError"
        own = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with pytest.raises(PermissionError):
            own.sendto(BELL.pack(98), target)
        own.close()
        assert mine.wait(0.2) is None  # nothing forged arrived
        server.ring(KEY, 3)
        assert mine.wait(2.0) == 3  # the supervisor's bells do
