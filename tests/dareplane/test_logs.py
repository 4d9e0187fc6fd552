"""Log forwarding: record encoding, the non-blocking handler, the receiver, the CLI."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import ROOT, wait_until

from dpshm.dareplane.logs import JsonSocketHandler, encode_record, get_logger, record_to_dict
from dpshm.dareplane.logserver import LogRecordSocketReceiver


class Unserialisable:
    def __repr__(self) -> str:
        return "<Unserialisable>"


def _record(msg: str = "hello %s and %s", args: tuple = ("a", 2), **extra: object):
    rec = logging.LogRecord("t.logs", logging.WARNING, __file__, 10, msg, args, None, "fn")
    rec.__dict__.update(extra)
    return rec


@pytest.fixture
def receiver(tmp_path: Path):
    records: list[logging.LogRecord] = []
    rcv = LogRecordSocketReceiver(
        "127.0.0.1",
        0,
        logfile=tmp_path / "all.log",
        console=False,
        record_callback=records.append,
        notice_interval_s=0,
    )
    th = threading.Thread(target=rcv.serve_until_stopped, daemon=True)
    th.start()
    rcv.records = records
    yield rcv
    rcv.close()
    th.join(5)
    assert not th.is_alive()


def test_import_configures_nothing() -> None:
    code = (
        "import logging, threading, dpshm, dpshm.dareplane.logs, dpshm.dareplane.server\n"
        "import dpshm.dareplane.logserver\n"
        "dpshm.DefaultServer; dpshm.get_logger\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "assert logging.getLogger().level == logging.WARNING\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert dpshm.dareplane.logs._socket_handler is None\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_record_to_dict_is_json_ready_and_complete() -> None:
    rec = _record(args=("a", Unserialisable()), extra_obj=Unserialisable(), extra_map={1: {2}})
    d = record_to_dict(rec)
    assert json.loads(json.dumps(d)) == d
    # the formatted text travels, no args: every receiver shows it as it is
    assert d["msg"] == "hello a and <Unserialisable>" and d["args"] == []
    assert d["extra_obj"] == "<Unserialisable>" and d["extra_map"] == {"1": "{2}"}
    for key in ("name", "levelname", "levelno", "created", "pathname", "lineno", "funcName"):
        assert d[key] == getattr(rec, key)
    frame = encode_record(rec)
    assert struct.unpack(">L", frame[:4])[0] == len(frame) - 4
    assert json.loads(frame[4:]) == d


def test_record_with_exception_carries_traceback_text() -> None:
    try:
        raise KeyError("boom")
    except KeyError:
        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    d = record_to_dict(rec)
    assert "KeyError: 'boom'" in d["exc_text"] and isinstance(d["exc_info"], str)


def test_handler_buffers_drops_and_delivers_when_receiver_appears(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    h = JsonSocketHandler("127.0.0.1", port, queue_size=3, flush_timeout_s=5)
    log = logging.getLogger(f"t.buffer.{port}")
    log.propagate = False
    log.addHandler(h)
    log.setLevel(logging.INFO)
    try:
        for i in range(10):
            log.info("record %d", i)  # no receiver: returns at once, 7 dropped
        assert h.dropped == 7
        records: list[logging.LogRecord] = []
        rcv = LogRecordSocketReceiver(
            "127.0.0.1", port, logfile=None, console=False, record_callback=records.append
        )
        th = threading.Thread(target=rcv.serve_until_stopped, daemon=True)
        th.start()
        try:
            wait_until(lambda: len(records) == 3, 10)
            log.info("after %s", "reconnect")
            h.close()  # flushes
            assert [r.getMessage() for r in records] == [
                "record 0",
                "record 1",
                "record 2",
                "after reconnect",
            ]
            assert h.sent == 4
        finally:
            rcv.close()
            th.join(5)
    finally:
        log.removeHandler(h)
        h.close()
        h.close()  # idempotent


def _dropped(s: socket.socket) -> bool:
    """The receiver closed our connection (EOF, or RST if our bytes were unread)."""
    try:
        return s.recv(10) == b""
    except ConnectionResetError:
        return True


def test_receiver_writes_file_and_survives_bad_senders(receiver, tmp_path: Path) -> None:
    port = receiver.port
    good = socket.create_connection(("127.0.0.1", port), timeout=5)
    frame = encode_record(_record())
    for i in range(len(frame)):  # one byte per segment: partial frames
        good.sendall(frame[i : i + 1])
    wait_until(lambda: len(receiver.records) == 1, 5)

    # mid-record disconnect
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(frame[: len(frame) // 2])
    # not a log-record stream: the announced length is absurd, the connection is closed
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        s.settimeout(5)
        assert _dropped(s)
    # framed, but not a JSON object: skipped with a note, the connection serves on
    for junk in (struct.pack(">L", 5) + b"{nope", b"\x00\x00\x00\x02[]"):
        good.sendall(junk)
    # any number of %s args, wrong counts, and non-serialisable values still land
    weird = [
        _record("three %s %s %s", ("x", "y", "z")),
        _record("too few %s %s", ("only",)),
        _record("plain", ()),
        _record("obj %s", (Unserialisable(),)),
        _record("map %(a)s/%(b)s", ({"a": 1, "b": Unserialisable()},)),
    ]
    for rec in weird:
        good.sendall(encode_record(rec))
    wait_until(lambda: len(receiver.records) == 6, 5)
    good.close()
    msgs = [r.getMessage() for r in receiver.records]
    assert msgs == [
        "hello a and 2",
        "three x y z",
        "too few %s %s ['only']",
        "plain",
        "obj <Unserialisable>",
        "map 1/<Unserialisable>",
    ]
    receiver._handlers[0].flush()
    text = (tmp_path / "all.log").read_text()
    assert "t.logs - WARNING - three x y z" in text and "hello a and 2" in text
    # each problem is in the log: half record lost, HTTP stream closed, unreadable frames
    assert "is lost" in text and "not a log-record stream" in text
    assert "is not UTF-8 JSON" in text


def test_get_logger_installs_handlers_only_on_call() -> None:
    name = "t.get_logger.case"
    log = get_logger(name, add_console_handler=True)
    try:
        kinds = sorted(type(h).__name__ for h in log.handlers)
        assert kinds == ["JsonSocketHandler", "StreamHandler"] and log.propagate is False
        assert get_logger(name).handlers == log.handlers  # no duplicates
        # the original's positional order: (name, add_console_handler, colors, no_socket_handler)
        assert get_logger(name, True, {"DEBUG": "cyan"}).handlers == log.handlers
        assert not any(
            isinstance(h, JsonSocketHandler)
            for h in get_logger(name, no_socket_handler=True).handlers
        )
        assert logging.getLogger().handlers == [] or all(
            not isinstance(h, JsonSocketHandler) for h in logging.getLogger().handlers
        )
    finally:
        log.handlers.clear()


def test_cli_logserver(tmp_path: Path) -> None:
    logfile = tmp_path / "cli.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dpshm", "logserver", "--port", "0", "--logfile", str(logfile)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, line
        port = int(line.split("listening on ")[1].split(",")[0].rsplit(":", 1)[1])
        h = JsonSocketHandler("127.0.0.1", port)
        h.handle(_record("via cli %s", ("ok",)))
        assert h.flush(5)
        h.close()
        wait_until(lambda: logfile.exists() and "via cli ok" in logfile.read_text(), 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()


def test_close_without_receiver_counts_undelivered() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    h = JsonSocketHandler("127.0.0.1", port, flush_timeout_s=0.05)
    for i in range(5):
        h.handle(_record("lost %s", (i,)))
    assert h.pending == 5 or h.pending == 5 - h.sent
    assert not h.flush(0.01)
    h.close()
    assert h.dropped == 5 and h.sent == 0 and h.pending == 0
    assert not h._thread.is_alive()
    h.handle(_record())  # after close: ignored, no error
