"""Fault tests of the log server (loopback, bounded in time and count).

Each asserts the outcome: a real record is still written, memory and threads
stay bounded, no line can be forged, nothing is lost without a note.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from pathlib import Path

import pytest
from helpers import wait_until
from log_util import serving_receiver

from dpshm.dareplane.logs import JsonSocketHandler

pytestmark = pytest.mark.fault


def _frame(obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">L", len(body)) + body


def _rec(msg: str, **extra: object) -> dict:
    return {"name": "t.mod", "msg": msg, "args": [], "levelname": "INFO", "levelno": 20,
            "created": 1.7e9, **extra}  # fmt: skip


def _send_real(port: int, msg: str) -> None:
    h = JsonSocketHandler("127.0.0.1", port, flush_timeout_s=5)
    try:
        import logging

        h.handle(logging.LogRecord("t.real", logging.WARNING, __file__, 1, msg, (), None))
        assert h.flush(10)
    finally:
        h.close()


@contextlib.contextmanager
def _connections(port: int, n: int):
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        yield socks
    finally:
        for s in socks:
            s.close()


def test_idle_flood_never_locks_out_a_real_sender(tmp_path: Path) -> None:
    log = tmp_path / "flood.log"
    threads_before = threading.active_count()
    with serving_receiver(log, max_connections=32) as (rcv, got):
        with _connections(rcv.port, 200):  # idle, never send a byte
            # one selector thread serves them all
            assert threading.active_count() <= threads_before + 1
            _send_real(rcv.port, "real record during the flood")
            wait_until(lambda: any("during the flood" in r.getMessage() for r in got), 10)
            assert rcv.connections <= 32
        # a sender that has logged keeps its place against a later flood
        keeper = socket.create_connection(("127.0.0.1", rcv.port), timeout=5)
        with keeper:
            keeper.sendall(_frame(_rec("keeper hello")))
            wait_until(lambda: any(r.getMessage() == "keeper hello" for r in got), 10)
            with _connections(rcv.port, 100):
                keeper.sendall(_frame(_rec("keeper still here")))
                wait_until(lambda: any(r.getMessage() == "keeper still here" for r in got), 10)
    text = log.read_text()
    assert "connection limit (32) reached" in text and "never sent a record" in text


def test_half_sent_large_frames_keep_memory_bounded(tmp_path: Path) -> None:
    log = tmp_path / "half.log"
    limit = 8 << 20
    with serving_receiver(log, max_record_bytes=4 << 20, max_buffered_bytes=limit) as (rcv, got):
        peak = 0
        with _connections(rcv.port, 10) as socks:
            chunk = b"x" * (256 << 10)
            for s in socks:  # each announces 4 MiB and sends 3 MiB of it
                s.sendall(struct.pack(">L", 4 << 20))
            for _ in range(12):
                for s in socks:
                    with contextlib.suppress(OSError):
                        s.sendall(chunk)
                peak = max(peak, rcv.buffered_bytes)
            wait_until(lambda: "max_buffered_bytes" in log.read_text(), 10)
            peak = max(peak, rcv.buffered_bytes)
            _send_real(rcv.port, "after the half frames")
            wait_until(lambda: any("half frames" in r.getMessage() for r in got), 10)
        # bounded by the limit plus one receive (64 KiB); the old receiver held 10 x 3 MiB
        assert peak <= limit + (64 << 10), peak
    text = log.read_text()
    assert "is lost" in text  # each closed connection says its record was lost


def test_stalled_partial_record_is_closed_with_a_note(tmp_path: Path) -> None:
    log = tmp_path / "stall.log"
    with (
        serving_receiver(log, stall_timeout_s=0.3) as (rcv, _got),
        socket.create_connection(("127.0.0.1", rcv.port), timeout=5) as s,
    ):
        frame = _frame(_rec("never finished"))
        s.sendall(frame[:-3])
        wait_until(lambda: rcv.connections == 0, 10)
        s.settimeout(5)
        assert s.recv(10) == b""
    assert "then nothing for 0.3 s" in log.read_text()


def test_control_characters_cannot_forge_lines(tmp_path: Path) -> None:
    log = tmp_path / "inject.log"
    forged = "2030-01-01 00:00:00,000 - control_room - ERROR - FORGED"
    with (
        serving_receiver(log) as (rcv, got),
        socket.create_connection(("127.0.0.1", rcv.port), timeout=5) as s,
    ):
        s.sendall(_frame(_rec(f"hello\n{forged}\r\x1b[2Kwiped")))
        s.sendall(_frame(_rec("a%(x)s\u2028" + forged, args={"x": "!"})))
        s.sendall(_frame(_rec("boom", exc_text=f"Traceback\n{forged}")))
        s.sendall(_frame(_rec("t.mod\nname", name=f"evil\n{forged}")))
        wait_until(lambda: len(got) == 4, 10)
    lines = log.read_text().splitlines()
    # every line is a record's first line or a marked continuation line
    assert not any(ln.startswith("2030") for ln in lines), lines
    assert lines[0].endswith("hello\\n" + forged + "\\r\\x1b[2Kwiped")
    assert lines[1].endswith("a!\\u2028" + forged)
    assert lines[3:5] == ["  | Traceback", "  | " + forged]
    assert " - evil\\n2030-01-01" in lines[5] and len(lines) == 6


@pytest.mark.parametrize("created", ["abc", None, "NaN", [1], True])
def test_non_numeric_time_is_written_with_a_note(tmp_path: Path, created: object) -> None:
    log = tmp_path / "time.log"
    with (
        serving_receiver(log) as (rcv, got),
        socket.create_connection(("127.0.0.1", rcv.port), timeout=5) as s,
    ):
        s.sendall(_frame(_rec("timeless", created=created)))
        s.sendall(_frame({"msg": "no time, no level, no name"}))
        wait_until(lambda: len(got) == 2, 10)
    text = log.read_text()
    assert "timeless [dpshm logserver: created=" in text and "time of receipt used" in text
    assert "no time, no level, no name [dpshm logserver: no 'created' time" in text


def test_unreadable_frames_are_noted_and_the_connection_serves_on(tmp_path: Path) -> None:
    log = tmp_path / "junk.log"
    with serving_receiver(log, notice_interval_s=0) as (rcv, got):
        with socket.create_connection(("127.0.0.1", rcv.port), timeout=5) as s:
            for junk in (b"\xff\xfe", b"[1, 2]", b"{nope", b"[" * 100_000):
                s.sendall(struct.pack(">L", len(junk)) + junk)
            s.sendall(_frame(_rec("after the junk")))
            wait_until(lambda: [r.getMessage() for r in got] == ["after the junk"], 10)
        assert rcv.notes == 4
    text = log.read_text()
    assert text.count("skipped") == 4


def test_limits_are_validated() -> None:
    from dpshm.dareplane.logserver import LogRecordSocketReceiver

    for kw in (
        {"max_connections": 0},
        {"max_record_bytes": 1},
        {"stall_timeout_s": 0},
        {"max_record_bytes": 4096, "max_buffered_bytes": 4096},
    ):
        with pytest.raises(ValueError, match=r"must (be|hold)"):
            LogRecordSocketReceiver("127.0.0.1", 0, logfile=None, console=False, **kw)


def test_huge_record_is_cut_by_the_sender_and_later_ones_flow(tmp_path: Path) -> None:
    import logging

    with serving_receiver(tmp_path / "big.log") as (rcv, got):
        h = JsonSocketHandler("127.0.0.1", rcv.port, flush_timeout_s=10)
        try:
            big = "y" * (3 << 20)
            h.handle(logging.LogRecord("t.big", logging.INFO, __file__, 1, "%s", (big,), None))
            h.handle(logging.LogRecord("t.big", logging.INFO, __file__, 1, "after", (), None))
            assert h.flush(20)
            wait_until(lambda: len(got) == 2, 10)
        finally:
            h.close()
    assert "[truncated by dpshm: " in got[0].getMessage() and got[1].getMessage() == "after"
    assert h.dropped == 0


def test_an_oversized_record_is_skipped_and_the_next_one_read(tmp_path: Path) -> None:
    import logging

    # the receiver allows 2 KiB, the sender sends 10 KB: skipped with a note, held nowhere
    log = tmp_path / "over.log"
    with serving_receiver(log, max_record_bytes=2048) as (rcv, got):
        h = JsonSocketHandler("127.0.0.1", rcv.port, flush_timeout_s=10)
        try:
            h.handle(logging.LogRecord("t.r", logging.INFO, __file__, 1, "z" * 10_000, (), None))
            h.handle(logging.LogRecord("t.r", logging.INFO, __file__, 1, "small", (), None))
            wait_until(lambda: [r.getMessage() for r in got] == ["small"], 20)
            assert rcv.buffered_bytes == 0
        finally:
            h.close()
    assert "is over max_record_bytes=2048; skipped" in log.read_text()


def test_cli_limits_are_passed_and_checked(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from helpers import ROOT

    r = subprocess.run(
        [sys.executable, "-m", "dpshm", "logserver", "--port", "0", "--max-connections", "0",
         "--logfile", str(tmp_path / "x.log")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert r.returncode != 0 and "max_connections must be an int >= 1, got 0" in r.stderr
