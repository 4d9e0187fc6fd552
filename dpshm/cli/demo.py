"""``dpshm mock`` and ``dpshm demo``: mock outlets, alone or with a supervisor and a consumer."""

from __future__ import annotations

import argparse
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from dpshm import config as C
from dpshm._threads import join_thread
from dpshm.cli._common import FMT, ns_arg, setup_logging, stop_on_signals
from dpshm.cli.live import LiveStatus

STATUS_EVERY_S = 1.0  # the live table's refresh
SETTLE_S = 0.3  # at the end: a count unchanged this long has taken everything in flight
SETTLE_MAX_S = 3.0
FILTER_JOIN_S = 5.0  # the filter thread closes its publisher (unlinks its ring) within


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
        "--filter", action="store_true",
        help="also run the filter worker: the signal band-passed 1-40 Hz with a 50 Hz notch, "
        "published as <name>_filtered (needs scipy: pip install 'dpshm[filters]')",
    )  # fmt: skip
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


def _mock_spec(args: argparse.Namespace) -> Any:
    """The :class:`~dpshm.mock.MockSpec` of the flags (ConfigError names a bad flag)."""
    from dpshm.mock import MockSpec

    d = args.duration
    if d is not None and not (math.isfinite(d) and d >= 0):
        raise C.ConfigError(f"--duration must be a number of seconds >= 0, got {d!r}")
    return MockSpec(
        name=args.name, channels=args.channels, rate=args.rate, markers=not args.no_markers,
        marker_name=args.marker_name, source_id=args.source_id,
    )  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> int:
    """``dpshm demo``: mock outlets, a supervisor and a consumer in one process."""
    from dpshm.mock import MockOutlets
    from dpshm.shm.supervisor import Supervisor
    from dpshm.shm.view import SharedStreamView

    if args.filter:  # before anything starts: MissingDependencyError names the extra
        from dpshm.dareplane import filterbank  # noqa: F401
    setup_logging("WARNING")
    spec = _mock_spec(args)
    stop = stop_on_signals()  # before anything starts; Ctrl-C ends the loop below
    selectors = [C.StreamSelector(name=spec.name)]
    if spec.markers:
        selectors.append(C.StreamSelector(name=spec.marker_name))
    cfg = C.load_config(None, overrides={"namespace": args.namespace, "streams": selectors})
    live = LiveStatus()
    got = {"samples": 0, "lost": 0}
    with live, MockOutlets(spec) as mock, Supervisor(cfg) as sup:
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
                if not sup.stop_event.is_set():  # not because the demo was stopped meanwhile
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
        filt = None
        filt_stop = threading.Event()  # set before the supervisor stops: the filter's
        if args.filter:  # publisher unlinks its own ring, the process never exits on it
            filt = threading.Thread(
                target=_filter, args=(spec.name, cfg.namespace, filt_stop),
                name="dpshm-demo-filter", daemon=True,
            )  # fmt: skip
            filt.start()
        viewer = None
        if args.view:  # its own process: the viewer never runs inside the supervisor's
            from dpshm.cli.view import spawn_viewer

            viewer = spawn_viewer(cfg.namespace, args.view_port, not args.no_browser)

        def show(status: dict[str, Any]) -> None:
            msg = f"consumer: {got['samples']} samples read, {got['lost']} lost; "
            live(status, extra=[msg + f"outlet pushed {mock.pushed}"])

        end = None if args.duration is None else time.monotonic() + args.duration
        try:
            while not stop.is_set():
                left = (
                    STATUS_EVERY_S if end is None else min(STATUS_EVERY_S, end - time.monotonic())
                )
                if left <= 0 or stop.wait(left):
                    break
                show(sup.status())
        finally:
            if viewer is not None:
                _stop_child(viewer)
        # stop pushing, then let supervisor and consumer take what is on its way, so
        # that the figures add up: pushed = before the supervisor + shared
        mock.stop()
        shared = _settled(lambda: _head(sup.status(), spec.name))
        _settled(lambda: got["samples"] + got["lost"])
        if filt is not None:
            filt_stop.set()
            join_thread(filt, FILTER_JOIN_S)
            if filt.is_alive():
                logging.getLogger("dpshm.demo").warning(
                    "the filter thread did not end within %.0f s", FILTER_JOIN_S
                )
        sup.stop()
        join_thread(reader, 2.0)
    print(_summary(mock.pushed, shared, got["samples"], got["lost"]))
    return 0


def _filter(name: str, namespace: str, stop: threading.Event) -> None:
    """``demo --filter``: the shipped filter worker's loop on the mock signal."""
    from dpshm.control.filter_worker import filter_stream
    from dpshm.shm.view import SharedStreamView

    for _ in range(100):  # the supervisor shares the signal within a resolve interval
        try:
            view = SharedStreamView(name, namespace=namespace)
            break
        except LookupError:
            if stop.wait(0.1):
                return
    else:
        return
    out = f"{name}_filtered"
    print(f"filter worker: {name!r} -> band-pass 1-40 Hz, notch 50 Hz -> {out!r}", flush=True)
    with view:
        filter_stream(view, out, stop, band=(1.0, 40.0), notch=50.0, namespace=namespace)


def _head(status: dict[str, Any], name: str) -> int:
    """Samples the supervisor shared of stream ``name`` (0 before it found it)."""
    return sum(int(s.get("head", 0)) for s in status["streams"].values() if s["name"] == name)


def _settled(value: Callable[[], int]) -> int:
    """``value()`` once it stopped changing for :data:`SETTLE_S` (at most SETTLE_MAX_S)."""
    deadline = time.monotonic() + SETTLE_MAX_S
    last, since = value(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < SETTLE_S:
        time.sleep(0.05)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
    return last


def _summary(pushed: int, shared: int, read: int, lost: int) -> str:
    """What ``dpshm demo`` says at the end: every pushed sample accounted for."""
    before_sup, before_consumer = pushed - shared, shared - read - lost
    text = (
        f"demo done: {pushed} pushed, {before_sup} before the supervisor connected (LSL "
        f"does not replay them), {shared} shared"
    )
    if before_consumer:
        text += f", {before_consumer} of them before the consumer attached (it reads new samples)"
    return text + f"; {read} read, {lost} lost."


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
    from dpshm.mock import MockOutlets

    spec = _mock_spec(args)
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
