"""A minimal Dareplane module served by dpshm's DefaultServer.

The equivalent of a module's ``api/server.py``: only the imports differ from a
dareplane-utils module. Run it and drive it with netcat or a control room::

    python examples/dareplane_module.py --port 8080
    printf 'GET_PCOMMS;START|{"interval_s": 0.5};STOP;CLOSE;' | nc 127.0.0.1 8080

PCOMMs: ``START`` (starts a worker thread that logs a tick every
``interval_s``; STOP stops it), ``SET`` (stores keyword arguments, returns 0)
and ``STATE`` (replies with the stored settings as JSON).
"""

from __future__ import annotations

import argparse
import json
import threading

from dpshm.dareplane.logs import get_logger
from dpshm.dareplane.server import DefaultServer

logger = get_logger("dareplane_module", add_console_handler=True)
logger.setLevel("INFO")

SETTINGS: dict = {}


def run_ticks(stop_event: threading.Event, interval_s: float = 1.0) -> None:
    """Worker loop: log a tick every ``interval_s`` until ``stop_event`` is set."""
    n = 0
    while not stop_event.wait(interval_s):
        n += 1
        logger.info("tick %d", n)


def start(interval_s: float = 1.0) -> tuple[threading.Thread, threading.Event]:
    """PCOMM START: run :func:`run_ticks` in a thread; the server stops it on STOP."""
    stop_event = threading.Event()
    th = threading.Thread(target=run_ticks, args=(stop_event, float(interval_s)), daemon=True)
    th.start()
    return th, stop_event


def set_settings(**kwargs: object) -> int:
    """PCOMM SET: store keyword arguments."""
    SETTINGS.update(kwargs)
    return 0


def state() -> str:
    """PCOMM STATE: reply with the settings as one JSON line."""
    return json.dumps(SETTINGS) + "\n"


def main(port: int = 8080, ip: str = "127.0.0.1") -> int:
    pcommand_map = {"START": start, "SET": set_settings, "STATE": state}
    server = DefaultServer(port, ip=ip, pcommand_map=pcommand_map, name="example_module")
    server.init_server()
    print(f"example_module listening on {ip}:{server.port}", flush=True)
    try:
        server.start_listening()  # returns after CLOSE
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--ip", default="127.0.0.1")
    a = parser.parse_args()
    raise SystemExit(main(a.port, a.ip))
