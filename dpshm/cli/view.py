"""``dpshm view``: the browser viewer of a namespace's streams (its own process).

Registered into the ``dpshm`` parser by :func:`add_commands`; the server lives
in :mod:`dpshm.viewer`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading

from dpshm import config as C
from dpshm.cli._common import namespace, ns_arg, stop_on_signals, until


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``view`` to the ``dpshm`` parser."""
    p = sub.add_parser(
        "view",
        help="live view of the shared streams in the browser",
        description="Serve a read-only page with the live stream table, the workers, the "
        "supervisor's log tail and the traces of a stream (read from shared memory: no "
        "extra LSL inlet, nothing runs in the supervisor). Ctrl-C stops.",
        epilog="The page is served on 127.0.0.1 only, unless --host and a token are given.",
    )
    ns_arg(p)
    p.add_argument(
        "--port", type=int, default=C.DEFAULT_VIEW_PORT,
        help=f"port of the page (default {C.DEFAULT_VIEW_PORT}; 0 = any free port)",
    )  # fmt: skip
    p.add_argument(
        "--host", default=C.DEFAULT_VIEW_HOST,
        help="address to bind (default 127.0.0.1); another address needs --token",
    )  # fmt: skip
    p.add_argument(
        "--token", default=None,
        help="secret the page needs (given as ?token= once, then a cookie); 'generate' makes "
        "one; required with a non-loopback --host",
    )  # fmt: skip
    p.add_argument(
        "--supervisor-port", type=int, default=None,
        help="port of the supervisor's command server on 127.0.0.1, to list its workers "
        "(default: the one the supervisor lists in its registry, found by itself)",
    )  # fmt: skip
    p.add_argument(
        "--supervisor-token", default=None,
        help="token of the supervisor's command server, when its [server] table sets one",
    )  # fmt: skip
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=cmd_view)


def _check_port(value: int, flag: str, allow_zero: bool = True) -> int:
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise C.ConfigError(f"{flag} {value} is not a TCP port; use 1..65535 (0 = any free one)")
    return value


def cmd_view(args: argparse.Namespace) -> int:
    """``dpshm view``."""
    from dpshm.errors import DpshmError
    from dpshm.viewer import ViewerServer, new_token

    ns = namespace(args)
    _check_port(args.port, "--port")
    if args.supervisor_port is not None:
        _check_port(args.supervisor_port, "--supervisor-port", allow_zero=False)
    token = new_token() if args.token == "generate" else args.token
    stop = stop_on_signals()
    try:
        viewer = ViewerServer(
            ns, args.host, args.port, token,
            supervisor_port=args.supervisor_port, supervisor_token=args.supervisor_token,
        )  # fmt: skip
    except OSError as exc:  # the port is taken: a clear line, not a traceback
        raise DpshmError(str(exc)) from None
    with viewer:
        viewer.start()
        print(f"dpshm view of namespace {ns!r}: {viewer.url} (Ctrl-C stops)", flush=True)
        if not args.no_browser:
            _open_browser(viewer.url)
        done = until(args.duration)
        while not stop.is_set() and not done():
            stop.wait(0.1)
    return 0


def _open_browser(url: str) -> None:
    """Open ``url`` without blocking (some browsers' launchers wait for the window)."""
    import webbrowser

    threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()


def spawn_viewer(namespace: str, port: int, browser: bool) -> subprocess.Popen:
    """Start ``dpshm view`` for ``namespace`` as a child process (``dpshm demo --view``)."""
    cmd = [sys.executable, "-m", "dpshm", "view", "--namespace", namespace, "--port", str(port)]
    if not browser:
        cmd.append("--no-browser")
    return subprocess.Popen(cmd)
