"""Forward a module's log records to a Dareplane log receiver in another process.

Run: ``python examples/log_forwarding.py [--logfile session.log]``

This process plays the control room's log server (``LogRecordSocketReceiver``,
what ``dpshm logserver`` runs); it starts a second Python process that plays a
module and logs three records through a ``JsonSocketHandler``. Every record
arrives, is written to the log file and printed here.

A real module writes ``logger = get_logger(__name__)``, which sends to the
Dareplane default ``127.0.0.1:9020``; this example picks a free port instead so
that it never collides with a log server already running.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from dpshm import JsonSocketHandler, LogRecordSocketReceiver

N_RECORDS = 3


def module(port: int) -> int:
    """The module side: log three records to the receiver on ``port``, then exit."""
    logger = logging.getLogger("example_module")
    logger.setLevel(logging.INFO)
    handler = JsonSocketHandler(port=port)
    logger.addHandler(handler)
    try:
        logger.info("decoder started with %d channels at %s Hz", 64, 1000.0)
        logger.warning("trial %d: %s", 7, "no response within 2 s")
        try:
            {}["threshold"]
        except KeyError:
            logger.exception("could not read the configuration")
    finally:
        handler.close()  # flushes: returns once the records are sent (bounded)
    return 0


def receiver(logfile: Path) -> int:
    """The control-room side: receive, print and store the module's records."""
    done = threading.Event()
    lock = threading.Lock()
    received: list[logging.LogRecord] = []

    def on_record(record: logging.LogRecord) -> None:
        with lock:
            received.append(record)
            print(f"received {record.levelname:7s} {record.name}: {record.getMessage()}")
            if len(received) >= N_RECORDS:
                done.set()

    with LogRecordSocketReceiver(
        "127.0.0.1", 0, logfile, console=False, record_callback=on_record
    ) as rcv:
        serve = threading.Thread(target=rcv.serve_until_stopped, daemon=True)
        serve.start()
        print(f"log receiver listening on 127.0.0.1:{rcv.port}, writing {logfile}", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--module", "--port", str(rcv.port)], timeout=30
        )
        ok = done.wait(10.0)
        rcv.stop()
        serve.join(5.0)
    lines = logfile.read_text().splitlines()
    print(f"{len(received)} records received; {len(lines)} lines in {logfile.name}")
    return 0 if ok and child.returncode == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logfile", type=Path, default=None, help="default: a temporary file")
    parser.add_argument("--module", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.module:
        return module(args.port)
    if args.logfile is not None:
        return receiver(args.logfile)
    with tempfile.TemporaryDirectory() as tmp:
        return receiver(Path(tmp) / "session.log")


if __name__ == "__main__":
    raise SystemExit(main())
