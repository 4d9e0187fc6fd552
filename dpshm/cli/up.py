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
from dpshm.cli._common import FMT, namespace, ns_arg, setup_logging
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
            "server_port": getattr(args, "port", None),
            **extra,
        },
    )


def cmd_up(args: argparse.Namespace) -> int:
    """``dpshm up``."""
    import contextlib

    from dpshm.control.commands import SupervisorFrontend, check_bind
    from dpshm.errors import DpshmError
    from dpshm.shm.supervisor import Supervisor

    setup_logging(args.log_level)
    cfg = _load(args)
    check_bind(cfg.server.host, cfg.server.token)  # refuse before sharing anything
    # a port the user chose must work; the implicit default may be taken (another namespace)
    explicit_port = args.port is not None or cfg.server != C.ServerConfig()
    live = None if args.quiet else LiveStatus()
    # on a terminal, log lines scroll above the live table from here on
    with live or contextlib.nullcontext(), Supervisor(cfg) as sup, contextlib.ExitStack() as stack:
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
