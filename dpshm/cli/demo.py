"""``dpshm mock`` and ``dpshm demo``: mock outlets, alone or with a supervisor and a consumer."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Any

from dpshm import config as C
from dpshm.cli._common import FMT, ns_arg, setup_logging, stop_on_signals
from dpshm.cli.screen import LiveStatus


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``mock`` and ``demo`` to the ``dpshm`` parser."""
    p = sub.add_parser(
        "mock", help="start mock LSL outlets (a signal and markers)", formatter_class=FMT,
        description="Publish a multi-channel float32 sine signal and a marker stream on LSL "
        "until Ctrl-C.",
    )  # fmt: skip
    _mock_args(p)
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=cmd_mock)

    p = sub.add_parser(
        "demo", help="mock outlets + supervisor + live status in one command",
        formatter_class=FMT,
        description="Start mock outlets and a supervisor sharing them, read the signal "
        "from a SharedStreamView and show live status, until Ctrl-C or --duration.",
    )  # fmt: skip
    _mock_args(p)
    ns_arg(p)
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument(
        "--view", action="store_true",
        help="also start `dpshm view` on the demo's streams and open it in the browser",
    )  # fmt: skip
    p.add_argument(
        "--view-port", type=int, default=C.DEFAULT_VIEW_PORT,
        help=f"port of the viewer (default {C.DEFAULT_VIEW_PORT}; 0 = any free port)",
    )  # fmt: skip
    p.add_argument("--no-browser", action="store_true", help="with --view: open no browser")
    p.set_defaults(func=cmd_demo)


def _mock_args(p: argparse.ArgumentParser) -> None:
    from dpshm import mock as M

    p.add_argument("--name", default=M.DEFAULT_SIGNAL_NAME, help="signal stream name")
    p.add_argument("--channels", type=int, default=M.DEFAULT_CHANNELS, help="signal channels")
    p.add_argument("--rate", type=float, default=M.DEFAULT_RATE, help="signal rate (Hz)")
    p.add_argument("--marker-name", default=M.DEFAULT_MARKER_NAME, help="marker stream name")
    p.add_argument("--no-markers", action="store_true", help="no marker stream")
    p.add_argument("--source-id", default="", help="source_id of the signal (default derived)")


def cmd_demo(args: argparse.Namespace) -> int:
    """``dpshm demo``: mock outlets, a supervisor and a consumer in one process."""
    from dpshm.mock import MockOutlets, MockSpec
    from dpshm.shm.supervisor import Supervisor
    from dpshm.shm.view import SharedStreamView

    setup_logging("WARNING")
    spec = MockSpec(
        name=args.name, channels=args.channels, rate=args.rate, markers=not args.no_markers,
        marker_name=args.marker_name, source_id=args.source_id,
    )  # fmt: skip
    selectors = [C.StreamSelector(name=spec.name)]
    if spec.markers:
        selectors.append(C.StreamSelector(name=spec.marker_name))
    cfg = C.load_config(None, overrides={"namespace": args.namespace, "streams": selectors})
    live = LiveStatus()
    got = {"samples": 0, "lost": 0}
    with MockOutlets(spec) as mock, Supervisor(cfg) as sup:
        print(
            f"dpshm demo: mock outlets {spec.name!r} ({spec.channels} ch @ {spec.rate:g} Hz)"
            f"{' and ' + repr(spec.marker_name) if spec.markers else ''} -> supervisor "
            f"(namespace {cfg.namespace!r}) -> SharedStreamView. Ctrl-C stops.",
            flush=True,
        )

        def consume() -> None:
            try:  # the supervisor shares the stream within a resolve interval or two
                view = SharedStreamView(spec.name, namespace=cfg.namespace, timeout=10.0)
            except LookupError as exc:
                logging.getLogger("dpshm.demo").error("the demo's consumer gave up: %s", exc)
                return
            with view:
                while not sup.stop_event.is_set():
                    data, _, lost = view.read_new() if view.wait(0.5) else (None, None, 0)
                    if data is not None:
                        got["samples"] += len(data)
                        got["lost"] += lost

        reader = threading.Thread(target=consume, name="dpshm-demo-consumer", daemon=True)
        reader.start()
        viewer = None
        if args.view:  # its own process: the viewer never runs inside the supervisor's
            from dpshm.cli.view import spawn_viewer

            viewer = spawn_viewer(cfg.namespace, args.view_port, not args.no_browser)

        def show(status: dict[str, Any]) -> None:
            live(status)
            if live.tty:
                msg = f"consumer: {got['samples']} samples read, {got['lost']} lost; "
                msg += f"outlet pushed {mock.pushed}"
                sys.stdout.write(msg + "\n")
                live.lines += 1

        try:
            sup.run(duration=args.duration, on_status=show)
        finally:
            if viewer is not None:
                _stop_child(viewer)
        sup.stop()
        reader.join(2.0)
    print(
        f"demo done: outlet pushed {mock.pushed} samples; consumer read {got['samples']}, "
        f"lost {got['lost']}."
    )
    return 0


def _stop_child(proc: Any, timeout: float = 5.0) -> None:
    """SIGTERM a child process, SIGKILL it after ``timeout`` s."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def cmd_mock(args: argparse.Namespace) -> int:
    """``dpshm mock``."""
    from dpshm.mock import MockOutlets, MockSpec

    spec = MockSpec(
        name=args.name, channels=args.channels, rate=args.rate, markers=not args.no_markers,
        marker_name=args.marker_name, source_id=args.source_id,
    )  # fmt: skip
    stop = stop_on_signals()
    with MockOutlets(spec) as mock:
        print(
            f"mock outlets: {spec.name!r} {spec.channels} ch float32 @ {spec.rate:g} Hz"
            f"{', markers ' + repr(spec.marker_name) if spec.markers else ''}; Ctrl-C stops.",
            flush=True,
        )
        stop.wait(args.duration)
    print(f"pushed {mock.pushed} samples and {mock.markers_pushed} markers")
    return 0
