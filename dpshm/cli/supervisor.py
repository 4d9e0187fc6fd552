"""Sub-commands of the supervisor: ``up``, ``ls``, ``tail``, ``logs``, ``mock``,
``down`` and ``demo``.

Registered into the ``dpshm`` parser by :func:`add_commands`; each command
imports the heavy modules (pylsl, ZeroMQ, numpy) only when it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from dpshm import config as C


class FMT(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only when there is a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], "") or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _ns_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--namespace",
        "-n",
        default=None,
        help=f"supervisor namespace (default: ${C.ENV_NAMESPACE} or {C.DEFAULT_NAMESPACE!r})",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the supervisor's sub-commands to the ``dpshm`` parser."""
    p = sub.add_parser(
        "up",
        help="share LSL streams through shared memory (the supervisor)",
        formatter_class=FMT,
        description="Resolve LSL streams and share each through a shared-memory ring; "
        "consumers read them with dpshm.SharedStreamView('NAME'). Runs until Ctrl-C, "
        "SIGTERM or `dpshm down`.",
        epilog=f"Environment: {C.ENV_NAMESPACE} (namespace), {C.ENV_CONFIG} (config file). "
        "Config file sections: [supervisor], [[streams]], [server], [workers.NAME]; "
        "see docs/supervisor.md.",
    )
    p.add_argument("--config", "-c", help="TOML config file (default: $DPSHM_CONFIG)")
    p.add_argument(
        "--stream",
        "-s",
        action="append",
        default=[],
        metavar="SEL",
        help="share only matching streams: NAME, or key=value[,key=value] with key name, "
        "type or source_id (repeatable; default: every stream)",
    )
    _ns_arg(p)
    p.add_argument(
        "--buffer-s",
        type=float,
        default=None,
        help=f"ring length in seconds for regular streams (default {C.DEFAULT_BUFFER_S})",
    )
    p.add_argument(
        "--irregular-samples",
        type=int,
        default=None,
        help=f"ring length of irregular/marker streams (default {C.DEFAULT_IRREGULAR_SAMPLES})",
    )
    p.add_argument(
        "--resolve-interval-s",
        type=float,
        default=None,
        help=f"seconds between LSL searches for new outlets "
        f"(default {C.DEFAULT_RESOLVE_INTERVAL_S})",
    )
    p.add_argument(
        "--transport",
        choices=C.TRANSPORTS,
        default=None,
        help=f"ZeroMQ transport of the bus (default {C.DEFAULT_TRANSPORT!r})",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--quiet", "-q", action="store_true", help="no live status")
    p.add_argument("--log-level", default="INFO", help="console log level")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="TCP port of the supervisor's command server (LIST_STREAMS, START_WORKER, ...; "
        f"overrides [server] port, default {C.DEFAULT_SERVER_PORT}; 0 = any free port)",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "ls", help="list the shared streams", formatter_class=FMT,
        description="Table of the streams the supervisor shares: type, channels, nominal "
        "and measured rate, head, lag behind the outlet, lost samples, stale.",
    )  # fmt: skip
    _ns_arg(p)
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "tail", help="print a stream's newest values or markers", formatter_class=FMT,
        description="Follow one shared stream: the newest sample of each chunk (numeric) "
        "or every marker (strings).",
    )  # fmt: skip
    p.add_argument("name", help="LSL stream name (or ring name)")
    p.add_argument("--source-id", default=None, help="pick one of several same-named streams")
    _ns_arg(p)
    p.add_argument("--channels", type=int, default=8, help="channels to show")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser(
        "logs", help="follow the supervisor's log records", formatter_class=FMT,
        description="Print the JSON log records the supervisor and its feeds publish on "
        "ZeroMQ.",
    )  # fmt: skip
    _ns_arg(p)
    p.add_argument("--level", default="DEBUG", help="lowest level shown")
    p.add_argument("--json", action="store_true", help="print each record as JSON")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        "mock", help="start mock LSL outlets (a signal and markers)", formatter_class=FMT,
        description="Publish a multi-channel float32 sine signal and a marker stream on LSL "
        "until Ctrl-C.",
    )  # fmt: skip
    _mock_args(p)
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=cmd_mock)

    p = sub.add_parser(
        "down", help="stop the running supervisor", formatter_class=FMT,
        description="Send SIGTERM to the namespace's supervisor and wait until it has "
        "unlinked its rings and exited. When no supervisor runs but a killed one (SIGKILL, "
        "a crash) left its rings and registry behind, remove them (as the next `dpshm up` "
        "would).",
    )  # fmt: skip
    _ns_arg(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser(
        "demo", help="mock outlets + supervisor + live status in one command",
        formatter_class=FMT,
        description="Start mock outlets and a supervisor sharing them, read the signal "
        "from a SharedStreamView and show live status, until Ctrl-C or --duration.",
    )  # fmt: skip
    _mock_args(p)
    _ns_arg(p)
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=cmd_demo)


def _mock_args(p: argparse.ArgumentParser) -> None:
    from dpshm import mock as M

    p.add_argument("--name", default=M.DEFAULT_SIGNAL_NAME, help="signal stream name")
    p.add_argument("--channels", type=int, default=M.DEFAULT_CHANNELS, help="signal channels")
    p.add_argument("--rate", type=float, default=M.DEFAULT_RATE, help="signal rate (Hz)")
    p.add_argument("--marker-name", default=M.DEFAULT_MARKER_NAME, help="marker stream name")
    p.add_argument("--no-markers", action="store_true", help="no marker stream")
    p.add_argument("--source-id", default="", help="source_id of the signal (default derived)")


def _setup_logging(level: str) -> None:
    lvl = getattr(logging, str(level).upper(), None)
    if not isinstance(lvl, int):
        raise C.ConfigError(f"--log-level {level!r} is not a level; use DEBUG, INFO, WARNING")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    logging.getLogger("dpshm").setLevel(min(lvl, logging.INFO))
    for h in logging.getLogger().handlers:
        h.setLevel(lvl)


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return C.validate_namespace(args.namespace, "--namespace")
    return C.namespace_from_env()


def _until(duration: float | None) -> Callable[[], bool]:
    end = None if duration is None else time.monotonic() + duration
    return lambda: end is not None and time.monotonic() >= end


# -- up / demo -------------------------------------------------------------------------


def _load(args: argparse.Namespace, **extra: Any) -> C.SupervisorConfig:
    sels = [C.parse_selector(s) for s in getattr(args, "stream", [])]
    return C.load_config(
        getattr(args, "config", None),
        overrides={
            "namespace": args.namespace,
            "streams": sels,
            "buffer_s": getattr(args, "buffer_s", None),
            "irregular_samples": getattr(args, "irregular_samples", None),
            "transport": getattr(args, "transport", None),
            "resolve_interval_s": getattr(args, "resolve_interval_s", None),
            "server_port": getattr(args, "port", None),
            **extra,
        },
    )


class _LiveStatus:
    """Compact status block, redrawn in place on a terminal, else one line per 5 s."""

    def __init__(self, stream=None):
        self.out = stream or sys.stdout
        self.tty = self.out.isatty()
        self.lines = 0
        self.last = 0.0

    def __call__(self, status: dict[str, Any]) -> None:
        if self.tty:
            text = format_table(status)
            if self.lines:
                self.out.write(f"\x1b[{self.lines}F\x1b[J")
            self.out.write(text + "\n")
            self.lines = text.count("\n") + 1
        elif status["streams"] and time.monotonic() - self.last >= 5.0:
            self.last = time.monotonic()
            parts = [
                f"{s['name']}: head {s['head']} {s['measured_rate']:.0f} Hz"
                f"{' STALE' if s['stale'] else ''}"
                for s in status["streams"].values()
            ]
            self.out.write(f"[dpshm] {len(parts)} stream(s): " + "; ".join(parts) + "\n")
        self.out.flush()


def cmd_up(args: argparse.Namespace) -> int:
    """``dpshm up``."""
    import contextlib

    from dpshm.control.commands import SupervisorFrontend, check_bind
    from dpshm.errors import DpshmError
    from dpshm.shm.supervisor import Supervisor

    _setup_logging(args.log_level)
    cfg = _load(args)
    check_bind(cfg.server.host, cfg.server.token)  # refuse before sharing anything
    # a port the user chose must work; the implicit default may be taken (another namespace)
    explicit_port = args.port is not None or cfg.server != C.ServerConfig()
    with Supervisor(cfg) as sup, contextlib.ExitStack() as stack:
        try:
            commands = stack.enter_context(SupervisorFrontend(sup, cfg))
        except OSError as exc:
            if explicit_port:
                raise DpshmError(str(exc)) from None
            logging.getLogger("dpshm.control.commands").warning(
                "the supervisor's commands (LIST_STREAMS, START_WORKER, ...) are NOT served: "
                "%s. Set [server] port in the config or pass --port (0 = any free port).",
                exc,
            )
        else:
            print(
                f"dpshm: commands on {cfg.server.host}:{commands.port} "
                f"(workers: {', '.join(commands.manager.declared) or 'none declared'})",
                flush=True,
            )
        if not args.quiet:
            print(
                f"dpshm supervisor on namespace {cfg.namespace!r} (pid {os.getpid()}); "
                "Ctrl-C or `dpshm down` stops it.",
                flush=True,
            )
        sup.run(duration=args.duration, on_status=None if args.quiet else _LiveStatus())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``dpshm demo``: mock outlets, a supervisor and a consumer in one process."""
    from dpshm.mock import MockOutlets, MockSpec
    from dpshm.shm.supervisor import Supervisor
    from dpshm.shm.view import SharedStreamView

    _setup_logging("WARNING")
    spec = MockSpec(
        name=args.name, channels=args.channels, rate=args.rate, markers=not args.no_markers,
        marker_name=args.marker_name, source_id=args.source_id,
    )  # fmt: skip
    selectors = [C.StreamSelector(name=spec.name)]
    if spec.markers:
        selectors.append(C.StreamSelector(name=spec.marker_name))
    cfg = C.load_config(None, overrides={"namespace": args.namespace, "streams": selectors})
    live = _LiveStatus()
    got = {"samples": 0, "lost": 0}
    with MockOutlets(spec) as mock, Supervisor(cfg) as sup:
        print(
            f"dpshm demo: mock outlets {spec.name!r} ({spec.channels} ch @ {spec.rate:g} Hz)"
            f"{' and ' + repr(spec.marker_name) if spec.markers else ''} -> supervisor "
            f"(namespace {cfg.namespace!r}) -> SharedStreamView. Ctrl-C stops.",
            flush=True,
        )

        def consume() -> None:
            deadline = time.monotonic() + 10.0
            view = None
            while view is None and not sup.stop_event.is_set():
                try:
                    view = SharedStreamView(spec.name, namespace=cfg.namespace)
                except LookupError:
                    if time.monotonic() > deadline:
                        return
                    sup.stop_event.wait(0.1)
            with view:
                while not sup.stop_event.is_set():
                    data, _, lost = view.read_new() if view.wait(0.5) else (None, None, 0)
                    if data is not None:
                        got["samples"] += len(data)
                        got["lost"] += lost

        reader = threading.Thread(target=consume, name="dpshm-demo-consumer", daemon=True)
        reader.start()

        def show(status: dict[str, Any]) -> None:
            live(status)
            if live.tty:
                msg = f"consumer: {got['samples']} samples read, {got['lost']} lost; "
                msg += f"outlet pushed {mock.pushed}"
                sys.stdout.write(msg + "\n")
                live.lines += 1

        sup.run(duration=args.duration, on_status=show)
        sup.stop()
        reader.join(2.0)
    print(
        f"demo done: outlet pushed {mock.pushed} samples; consumer read {got['samples']}, "
        f"lost {got['lost']}."
    )
    return 0


# -- ls ----------------------------------------------------------------------------------


def _fmt_rate(v: Any) -> str:
    return "irreg" if not v else f"{float(v):g}"


def format_table(status: dict[str, Any]) -> str:
    """The ``dpshm ls`` table of a supervisor status dict."""
    cols = ("stream", "type", "ch", "rate", "measured", "head", "lag ms", "lost", "stale")
    rows = []
    for s in sorted(status.get("streams", {}).values(), key=lambda s: s["name"]):
        lag = s.get("lag_s")
        rows.append(
            (
                s["name"],
                s["type"],
                str(s["channels"]),
                _fmt_rate(s["srate"]),
                f"{s.get('measured_rate', 0.0):.1f}",
                str(s.get("head", 0)),
                "-" if lag is None or (isinstance(lag, float) and math.isnan(lag))
                else f"{lag * 1e3:.1f}",
                str(s.get("lost", 0)),
                "STALE" if s.get("stale") else "-",
            )
        )  # fmt: skip
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    if not rows:
        lines.append("(no streams yet: start an LSL outlet, e.g. `dpshm mock`)")
    head = f"namespace {status.get('namespace')!r}, supervisor pid {status.get('pid')}"
    return head + "\n" + "\n".join(lines)


def cmd_ls(args: argparse.Namespace) -> int:
    """``dpshm ls``."""
    from dpshm.shm import registry
    from dpshm.shm.ring import SharedRing

    ns = _namespace(args)
    reg = registry.read_registry(ns)
    status = registry.read_status(ns) or {"streams": {}}
    streams = {}
    for key, e in reg.streams.items():
        s = {**dict(e.info), **status.get("streams", {}).get(key, {})}
        try:
            with SharedRing.attach(e.ring) as ring:
                s["head"] = ring.head
                s["stale"] = ring.stale
        except LookupError:
            pass
        streams[key] = s
    full = {"namespace": ns, "pid": reg.pid, "streams": streams}
    print(json.dumps(full, indent=1) if args.json else format_table(full))
    return 0


# -- tail / logs ---------------------------------------------------------------------------


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_tail(args: argparse.Namespace) -> int:
    """``dpshm tail NAME``."""
    import numpy as np

    from dpshm.shm.view import SharedStreamView

    stop = _stop_on_signals()
    done = _until(args.duration)
    with SharedStreamView(args.name, source_id=args.source_id, namespace=args.namespace) as v:
        strings = v.format == "string"
        print(
            f"{args.name}: {v.n_channels} ch {v.format} @ {_fmt_rate(v.srate)} (Ctrl-C stops)",
            flush=True,
        )
        np.set_printoptions(precision=4, suppress=True, linewidth=160)
        while not stop.is_set() and not done():
            if not v.wait(0.5):
                continue
            data, ts, lost = v.read_new()
            if lost:
                print(f"... {lost} samples lost (reading too slowly)")
            if strings:
                for row, t in zip(data, ts, strict=True):
                    print(f"{t:.4f}  {' | '.join(map(str, row))}")
            elif len(ts):
                print(f"{ts[-1]:.4f}  +{len(ts):<4d} {data[-1, : args.channels]}")
            sys.stdout.flush()
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """``dpshm logs``."""
    from dpshm.shm import registry
    from dpshm.shm.bus import LogSubscriber

    ns = _namespace(args)
    reg = registry.read_registry(ns)
    level = logging.getLevelName(str(args.level).upper())
    if not isinstance(level, int):
        raise C.ConfigError(f"--level {args.level!r} is not a level; use DEBUG, INFO, WARNING")
    stop = _stop_on_signals()
    done = _until(args.duration)
    with LogSubscriber(reg.endpoints["logs"]) as sub:
        print(f"following the log records of namespace {ns!r} (Ctrl-C stops)", flush=True)
        while not stop.is_set() and not done():
            for rec in sub.recv(0.5):
                if int(rec.get("levelno", 0)) < level:
                    continue
                if args.json:
                    print(json.dumps(rec))
                else:
                    print(_format_record(rec))
            sys.stdout.flush()
    return 0


def _format_record(rec: dict[str, Any]) -> str:
    from dpshm.dareplane.logrecord import continuation, dict_to_record, escape_controls

    r = dict_to_record(rec)  # the one reading of a wire record (args, times, escapes)
    when = time.strftime("%H:%M:%S", time.localtime(r.created))
    return escape_controls(f"{when} {r.levelname:<7} {r.name}: {r.getMessage()}") + continuation(
        r.exc_text
    )


# -- mock / down ---------------------------------------------------------------------------


def cmd_mock(args: argparse.Namespace) -> int:
    """``dpshm mock``."""
    from dpshm.mock import MockOutlets, MockSpec

    spec = MockSpec(
        name=args.name, channels=args.channels, rate=args.rate, markers=not args.no_markers,
        marker_name=args.marker_name, source_id=args.source_id,
    )  # fmt: skip
    stop = _stop_on_signals()
    with MockOutlets(spec) as mock:
        print(
            f"mock outlets: {spec.name!r} {spec.channels} ch float32 @ {spec.rate:g} Hz"
            f"{', markers ' + repr(spec.marker_name) if spec.markers else ''}; Ctrl-C stops.",
            flush=True,
        )
        stop.wait(args.duration)
    print(f"pushed {mock.pushed} samples and {mock.markers_pushed} markers")
    return 0


def _sweep_after_kill(ns: str, not_running: Exception) -> int:
    """``dpshm down`` with no live supervisor: remove what a killed one left behind."""
    from dpshm.errors import SupervisorRunningError
    from dpshm.shm import registry
    from dpshm.shm.supervisor import sweep_dead

    try:
        lock = registry.SupervisorLock(ns)
    except SupervisorRunningError as exc:  # one is starting right now
        raise SupervisorRunningError(f"{exc} (it is starting: run `dpshm down` again)") from None
    with lock:
        old, removed = sweep_dead(ns)
    if not removed and old is None:
        raise not_running  # nothing was running and nothing was left: say so (exit 1)
    pid = (old or {}).get("pid", "unknown")
    mb = sum(size for _, size in removed) / 1e6
    print(
        f"no supervisor runs on namespace {ns!r}; removed what a killed one (pid {pid}) left: "
        f"{len(removed)} shared-memory segment(s) ({mb:.1f} MB)"
        f"{' and its registry' if old is not None else ''}"
    )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """``dpshm down``."""
    from dpshm.errors import SupervisorNotRunningError
    from dpshm.shm import registry

    ns = _namespace(args)
    try:
        reg = registry.read_registry(ns)
    except SupervisorNotRunningError as exc:
        return _sweep_after_kill(ns, exc)
    os.kill(reg.pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while reg.alive():
        if time.monotonic() > deadline:
            print(
                f"dpshm: supervisor pid {reg.pid} still runs {args.timeout} s after SIGTERM; "
                f"kill it with `kill -9 {reg.pid}`, then `dpshm down` again removes what it left",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.05)
    print(f"supervisor of namespace {ns!r} (pid {reg.pid}) stopped")
    return 0
