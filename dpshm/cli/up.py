"""``dpshm up`` (the supervisor) and ``dpshm down``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any

from dpshm import config as C
from dpshm.cli._common import FMT, namespace, ns_arg, setup_logging, stop_on_signals
from dpshm.cli.live import LiveStatus


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``up`` and ``down`` to the ``dpshm`` parser."""
    p = sub.add_parser(
        "up",
        help="share LSL streams through shared memory (the supervisor)",
        formatter_class=FMT,
        description="Resolve LSL streams and share each through a shared-memory ring; "
        "consumers read them with dpshm.SharedStreamView('NAME'). Runs until Ctrl-C, "
        "SIGTERM or `dpshm down`.",
        epilog=f"Environment: {C.ENV_NAMESPACE} (namespace), {C.ENV_CONFIG} (config file), "
        f"{C.ENV_ALLOW_UNSAFE_PLATFORM}=1 (run on a CPU other than x86-64, at your risk). "
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
    ns_arg(p)
    for flag, key, kind, what, default in (
        ("--buffer-s", "buffer_s", float, "ring length of regular streams", C.DEFAULT_BUFFER_S),
        ("--irregular-samples", "irregular_samples", int, "ring length of irregular/marker "
         "streams", C.DEFAULT_IRREGULAR_SAMPLES),
        ("--resolve-interval-s", "resolve_interval_s", float, "seconds between LSL searches "
         "for new outlets", C.DEFAULT_RESOLVE_INTERVAL_S),
        ("--max-subscribers", "max_subscribers", int, "doorbell subscriptions, all streams "
         "together", C.DEFAULT_MAX_SUBSCRIBERS),
    ):  # fmt: skip
        p.add_argument(
            flag,
            type=kind,
            default=None,
            help=f"{what}: {C.BOUNDS[key].describe()} (default {default})",
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
        help="serve the supervisor's commands (LIST_STREAMS, START_WORKER, ...) on this TCP "
        "port of 127.0.0.1 ([server] host), 0 = any free port; overrides [server] port. "
        "Without --port or a [server] table no port is opened. A [server] table without "
        f"port uses {C.DEFAULT_SERVER_PORT}. Any local process that can connect may command "
        "the supervisor unless [server] token is set (docs/operations.md, Security)",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "down", help="stop the running supervisor", formatter_class=FMT,
        description="Send SIGTERM to the namespace's supervisor and wait until it has "
        "unlinked its rings and exited. When no supervisor runs but a killed one (SIGKILL, "
        "a crash) left its rings and registry behind, remove them (as the next `dpshm up` "
        "would). With nothing to stop it says so and exits 0.",
    )  # fmt: skip
    ns_arg(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    p.set_defaults(func=cmd_down)


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
            "max_subscribers": getattr(args, "max_subscribers", None),
            "server_port": getattr(args, "port", None),
            **extra,
        },
    )


def _seconds(flag: str, value: float) -> float:
    """A duration flag, finite and > 0, or a one-line ConfigError naming it."""
    from dpshm.dareplane.timing import check_seconds

    try:
        return check_seconds(flag, value, positive=True)
    except (TypeError, ValueError) as exc:
        raise C.ConfigError(str(exc)) from None


def cmd_up(args: argparse.Namespace) -> int:
    """``dpshm up``."""
    import contextlib

    from dpshm.control.commands import SupervisorFrontend, check_bind
    from dpshm.errors import DpshmError
    from dpshm.shm.supervisor import Supervisor

    setup_logging(args.log_level)
    if args.duration is not None:
        _seconds("--duration", args.duration)
    cfg = _load(args)  # every flag and key checked here: nothing exists yet
    check_bind(cfg.server.host, cfg.server.token)  # refuse before sharing anything
    sup = Supervisor(cfg)
    stop_on_signals(sup.stop_event)  # before anything starts (a Ctrl-C then stops run())
    live = None if args.quiet else LiveStatus()
    with contextlib.ExitStack() as stack:
        if live is not None:  # on a terminal, log lines scroll above the live table from here on
            stack.enter_context(live)
        stack.callback(sup.close)  # after the frontend (LIFO): workers stop before the rings go
        if cfg.server.enabled:  # bound before any ring exists: a bad port leaves nothing
            try:
                commands = stack.enter_context(SupervisorFrontend(sup, cfg))
            except OSError as exc:
                raise DpshmError(str(exc)) from None
            print(
                f"dpshm: commands on {cfg.server.host}:{commands.port} "
                f"(workers: {', '.join(commands.manager.declared) or 'none declared'})",
                flush=True,
            )
        else:
            logging.getLogger("dpshm.control.commands").info(
                "no command server (no TCP port is open): pass --port N or add a [server] "
                "table to the config to serve LIST_STREAMS, START_WORKER, ..."
            )
        sup.start()
        if not args.quiet:
            print(
                f"dpshm supervisor on namespace {cfg.namespace!r} (pid {os.getpid()}); "
                "Ctrl-C or `dpshm down` stops it.",
                flush=True,
            )
        sup.run(duration=args.duration, on_status=live)
    return 0


def _sweep_after_kill(ns: str) -> int:
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
    if not removed and old is None:  # nothing runs and nothing was left: say so (exit 0)
        print(
            f"nothing to stop: no dpshm supervisor runs on namespace {ns!r}, and none left "
            "shared memory behind"
        )
        return 0
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

    ns = namespace(args)
    _seconds("--timeout", args.timeout)
    try:
        reg = registry.read_registry(ns)
    except SupervisorNotRunningError:
        return _sweep_after_kill(ns)
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
