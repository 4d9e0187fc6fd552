"""Log records between dpshm and dareplane-utils' own log code, both directions,
each side in its own process.

dpshm -> original: a module process runs dpshm's ``DefaultServer`` with the
logger a real module would pass (dareplane-utils' ``get_logger``, i.e. its
``UJsonSocketHandler``; dpshm's ``get_logger``; or none) and sends records that
broke the original receiver (``LogRecordSocketReceiver`` of dareplane-utils
0.0.24; its receiving code is the same in 0.0.21): two or more ``%``-args,
texts containing ``%s``, a traceback, a handler thread that dies.

original -> dpshm: dareplane-utils' ``UJsonSocketHandler`` in a process of its
own sends what it sends (mapping args, its everything-as-string fallback,
non-string messages, a non-numeric time) to dpshm's receiver.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, wait_until
from log_util import serving_receiver
from server_client import RawClient

from dpshm.dareplane.procs import stop_process_tree

pytest.importorskip("dareplane_utils")
pytestmark = pytest.mark.interop

ORIGINAL_RECEIVER = r"""
import sys
from pathlib import Path
from dareplane_utils.logging.server import LogRecordSocketReceiver
rcv = LogRecordSocketReceiver(host="127.0.0.1", port=0, logfile=Path(sys.argv[1]))
sys.__stdout__.write(f"{rcv.server_address[1]}\n"); sys.__stdout__.flush()
rcv.serve_until_stopped()
"""

# a module as written for dareplane-utils, with its imports switched to dpshm
# (argv: log port, which logger the module passes to DefaultServer)
MODULE = r"""
import sys, threading, time
log_port, kind = int(sys.argv[1]), sys.argv[2]
import dpshm.dareplane.logs
dpshm.dareplane.logs.DEFAULT_LOG_PORT = log_port  # the test's receiver instead of 9020
from dpshm import DefaultServer, get_logger
if kind == "dareplane":  # a module that kept dareplane-utils' logging
    from dareplane_utils.logging import logger as dl
    dl.default_dareplane_config["handlers"]["socket"]["port"] = log_port
    logger = dl.get_logger("testmodule")
elif kind == "dpshm":
    logger = get_logger("testmodule")
else:
    logger = None
if kind == "default-next-to-dareplane":  # the module's own logging stays dareplane-utils'
    from dareplane_utils.logging import logger as dl
    dl.default_dareplane_config["handlers"]["socket"]["port"] = log_port
    dl.get_logger("testmodule.own")  # root now has its socket handler to the log server
if logger is not None:
    logger.setLevel("INFO")

def boom():
    raise ValueError("bad %s %s payload")

def work(delay_s=0.0):  # dies at once (maybe before the server keeps it) or later
    stop = threading.Event()
    def run():
        time.sleep(delay_s)
        raise RuntimeError(f"worker %s died after {delay_s} s")
    th = threading.Thread(target=run, name=f"worker-{delay_s}")
    th.start()
    return th, stop

def done():  # the end marker (no %-args: the module's own records are its business)
    (logger or dpshm.dareplane.logs.server_logger()).warning("module done now")
    return 0

server = DefaultServer(0, pcommand_map={"BOOM": boom, "WORK": work, "DONE": done},
                       name="testmodule", logger=logger)
server.init_server()
print(server.port, flush=True)
server.start_listening()
"""


def _spawn(code: str, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
    )


@pytest.mark.parametrize("kind", ["dareplane", "dpshm", "default", "default-next-to-dareplane"])
def test_server_records_readable_by_original_receiver(tmp_path: Path, kind: str) -> None:
    logfile = tmp_path / "control_room.log"
    rcv = _spawn(ORIGINAL_RECEIVER, str(logfile), cwd=tmp_path)
    module = None
    try:
        log_port = int(rcv.stdout.readline())
        module = _spawn(MODULE, str(log_port), kind, cwd=tmp_path)
        client = RawClient(int(module.stdout.readline()))
        try:
            client.send(b"NOPE%s%s;")  # unknown command: a warning whose text has %s
            client.read_line()
            client.send(b"BOOM;")  # a handler's traceback, its message with two %s
            client.read_line()
            client.send(b'WORK|{"delay_s": 0};')  # kept threads that die
            client.send(b'WORK|{"delay_s": 0.3};')
            wait_until(
                lambda: "after 0.3 s" in (logfile.read_text() if logfile.exists() else ""), 10
            )
            client.send(b"DONE;")
            want = [
                "unknown PCOMM 'NOPE%s%s'",
                "handler of 'BOOM' failed",
                "ValueError: bad %s %s payload",
                "BOOM raised ValueError: bad %s %s payload",
                "thread worker-0 died: RuntimeError: worker %s died after 0 s",
                "thread worker-0.3 died: RuntimeError: worker %s died after 0.3 s",
                "RuntimeError: worker %s died after 0.3 s\n",  # the traceback's last line
                "module done now",
            ]

            def all_lines() -> bool:
                text = logfile.read_text() if logfile.exists() else ""
                return all(w in text for w in want)

            wait_until(all_lines, 15)
        finally:
            client.close()
        assert rcv.poll() is None  # the receiver survived every record
        # each record once, also when the root logger has dareplane-utils' socket handler
        assert logfile.read_text().count("unknown PCOMM 'NOPE%s%s'") == 1
    finally:
        if module is not None:
            stop_process_tree(module, grace_s=1)
            module.stdout.close()
            module.stderr.close()
        stop_process_tree(rcv, grace_s=1)
        rcv.stdout.close()
        err = rcv.stderr.read()
        rcv.stderr.close()
    # the original prints its handler's crash or a failed format here
    for crash in ("Exception occurred during processing", "Logging error", "TypeError"):
        assert crash not in err, err[-2000:]


ORIGINAL_SENDER = r"""
import logging, logging.handlers, sys
from dareplane_utils.logging.ujson_socket_handler import UJsonSocketHandler
h = UJsonSocketHandler("127.0.0.1", int(sys.argv[1]))
log = logging.getLogger("orig.module")
log.propagate = False
log.addHandler(h)
log.setLevel(logging.DEBUG)
log.info("%(who)s has %(n)d", {"who": "one-key", "n": 1})  # mapping args
log.info("%(only)s", {"only": "one key"})
log.warning("plain %s %s %s", 1, "two", 3.0)
log.info({"a": "dict message"})
try:
    raise KeyError("k")
except KeyError:
    log.exception("failed on %s", b"bytes")  # exc_info: the handler stringifies all
rec = log.makeRecord("orig.module", logging.INFO, "x.py", 1, "bad time", (), None)
rec.created = "not-a-time"
log.handle(rec)
log.info("last")
h.close()
"""


def test_original_handler_records_read_by_dpshm_receiver(tmp_path: Path) -> None:
    with serving_receiver(tmp_path / "r.log") as (rcv, got):
        sender = _spawn(ORIGINAL_SENDER, str(rcv.port), cwd=tmp_path)
        try:
            assert sender.wait(30) == 0, sender.stderr.read()
        finally:
            sender.stdout.close()
            sender.stderr.close()
        wait_until(lambda: len(got) == 7, 10)
    msgs = [r.getMessage() for r in got]
    assert msgs[:5] == [
        "one-key has 1",
        "one key",
        "plain 1 two 3.0",
        '{"a": "dict message"}',
        "failed on b'bytes'",
    ]
    # the original handler sends exc_info as its str() (the traceback is not rendered)
    assert "KeyError('k')" in got[4].exc_text
    assert msgs[5].startswith("bad time [dpshm logserver: created='not-a-time' is not a number")
    assert msgs[6] == "last"
    text = (tmp_path / "r.log").read_text()
    assert "orig.module - ERROR - failed on b'bytes'\n  | (no traceback sent) exc_info:" in text
    assert "bad time [dpshm logserver" in text
