"""Log interop with the real dareplane-utils 0.0.24 handler and receiver."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, wait_until
from log_util import serving_receiver

from dpshm.dareplane.logs import JsonSocketHandler, encode_record
from dpshm.dareplane.procs import stop_process_tree

pytest.importorskip("dareplane_utils")
from dareplane_utils.logging.ujson_socket_handler import UJsonSocketHandler

pytestmark = pytest.mark.interop


ORIGINAL_RECEIVER = r"""
import sys
from pathlib import Path
from dareplane_utils.logging.server import LogRecordSocketReceiver
rcv = LogRecordSocketReceiver(host="127.0.0.1", port=0, logfile=Path(sys.argv[1]))
sys.__stdout__.write(f"{rcv.server_address[1]}\n"); sys.__stdout__.flush()
rcv.serve_until_stopped()
"""


def _records() -> list[logging.LogRecord]:
    out = []
    for i, (msg, args) in enumerate([("plain message", ()), ("value %s", (42,)), ("ok", ())]):
        rec = logging.LogRecord("interop.mod", logging.INFO + i, "/x/mod.py", 7, msg, args, None)
        out.append(rec)
    return out


def test_frames_match_original_handler() -> None:
    ujson_handler = UJsonSocketHandler("127.0.0.1", 9)
    try:
        for rec in _records():
            ours = json.loads(encode_record(rec)[4:])
            theirs = json.loads(ujson_handler.makePickle(rec)[4:])
            assert ours.keys() == theirs.keys()
            # dpshm sends the formatted text and no args (the original receiver
            # crashes on two or more args); every other field is the same
            assert (ours["msg"], ours["args"]) == (rec.getMessage(), [])
            for k, v in theirs.items():
                if k not in ("msg", "args"):
                    assert ours[k] == (pytest.approx(v) if isinstance(v, float) else v), k
    finally:
        ujson_handler.close()


def test_original_handler_to_our_receiver(tmp_path: Path) -> None:
    with serving_receiver(tmp_path / "r.log") as (rcv, got):
        handler = UJsonSocketHandler("127.0.0.1", rcv.port)
        try:
            sent = _records()
            sent.append(
                logging.LogRecord(
                    "interop.mod", logging.ERROR, "/x", 1, "%s-%s-%s", (1, 2, 3), None
                )
            )
            for rec in sent:
                handler.handle(rec)
            wait_until(lambda: len(got) == len(sent), 10)
            for a, b in zip(sent, got, strict=True):
                assert (b.name, b.levelno, b.levelname, b.getMessage(), b.lineno) == (
                    a.name,
                    a.levelno,
                    a.levelname,
                    a.getMessage(),
                    a.lineno,
                )
                assert b.created == pytest.approx(a.created) and b.process == a.process
        finally:
            handler.close()


@pytest.mark.parametrize("who", ["ours", "theirs"])
def test_handlers_to_original_receiver_write_the_same_lines(tmp_path: Path, who: str) -> None:
    logfile = tmp_path / f"{who}.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", ORIGINAL_RECEIVER, str(logfile)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    try:
        port = int(proc.stdout.readline())
        handler: logging.Handler = (
            JsonSocketHandler("127.0.0.1", port)
            if who == "ours"
            else UJsonSocketHandler("127.0.0.1", port)
        )
        for rec in _records():
            handler.handle(rec)
        handler.close()
        want = ["interop.mod - INFO - plain message", "interop.mod - Level 21 - value", "ok"]

        def landed() -> bool:
            text = logfile.read_text() if logfile.exists() else ""
            return all(w in text for w in want)

        wait_until(landed, 10)
        lines = [ln.split(" - ", 1)[1] for ln in logfile.read_text().splitlines()]
        # the original receiver shows its own handler's one-arg record as "[42]"
        assert lines == [
            "interop.mod - INFO - plain message",
            "interop.mod - Level 21 - value " + ("42" if who == "ours" else "[42]"),
            "interop.mod - Level 22 - ok",
        ]
    finally:
        proc.stdout.close()
        stop_process_tree(proc, grace_s=1)
