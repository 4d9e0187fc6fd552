"""The ``dpshm`` command line.

:func:`build_parser` collects the command groups (:mod:`.up`, :mod:`.streams`,
:mod:`.demo`, ``bench``) and ``logserver``; each command imports its heavy
modules (pylsl, ZeroMQ, numpy) only when it runs, so ``dpshm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dpshm._version import __version__
from dpshm.errors import DpshmError


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``dpshm`` command."""
    parser = argparse.ArgumentParser(
        prog="dpshm",
        description="Share LSL streams between processes through shared memory.",
    )
    parser.add_argument("--version", action="version", version=f"dpshm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_logserver(sub)
    from dpshm.cli import demo, streams, up, view

    for group in (up, streams, demo, view):
        group.add_commands(sub)
    from dpshm.bench.cli import add_command as add_bench_command

    add_bench_command(sub)
    return parser


def _add_logserver(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "logserver",
        help="receive Dareplane JSON log records and write one log file",
        description="Receive Dareplane JSON log records (port 9020) from any number of "
        "modules and write them to one log file and the console. Ctrl-C stops.",
    )
    p.add_argument("--logfile", default="default_socket.log", help="log file (appended)")
    p.add_argument("--host", default="localhost", help="address to bind (default: localhost)")
    p.add_argument("--port", type=int, default=9020, help="port; 0 picks a free one")
    p.add_argument("--quiet", action="store_true", help="do not echo records to the console")
    p.add_argument("--max-connections", type=int, default=64, help="senders at once (64)")
    p.add_argument(
        "--max-record-bytes", type=int, default=1 << 20, help="longest record kept (1 MiB)"
    )
    p.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=32 << 20,
        help="partly received records held over all senders (32 MiB)",
    )
    p.add_argument(
        "--stall-timeout-s",
        type=float,
        default=30.0,
        help="close a sender stopped mid-record this long (30 s)",
    )
    p.set_defaults(func=_cmd_logserver)


def _cmd_logserver(args: argparse.Namespace) -> int:
    import signal
    import threading

    from dpshm.dareplane.logserver import LogRecordSocketReceiver

    try:
        rcv = LogRecordSocketReceiver(
            host=args.host,
            port=args.port,
            logfile=args.logfile,
            console=not args.quiet,
            max_connections=args.max_connections,
            max_record_bytes=args.max_record_bytes,
            max_buffered_bytes=args.max_buffered_bytes,
            stall_timeout_s=args.stall_timeout_s,
        )
    except OSError as exc:  # the port is taken (another log server), or the log file
        if exc.filename:
            raise DpshmError(
                f"cannot write the log file {exc.filename!r}: {exc.strerror}; choose another "
                "--logfile"
            ) from None
        raise DpshmError(exc.strerror or str(exc)) from None
    print(f"dpshm logserver listening on {rcv.host}:{rcv.port}, writing {args.logfile}", flush=True)

    def _stop(signum: int, frame: object) -> None:
        threading.Thread(target=rcv.stop, daemon=True).start()

    old = signal.signal(signal.SIGTERM, _stop)
    try:
        rcv.serve_until_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        rcv.close()
    return 0


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as `yes | head -1` reports for `yes`


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code.

    A :class:`~dpshm.errors.DpshmError` prints one line (``dpshm CMD: error: ...``,
    exit 1); Ctrl-C exits 130 and a reader that closed the pipe (``dpshm ls --json
    | head -1``) exits 141 quietly, both without a traceback.
    """
    try:  # a Ctrl-C before the handler is in place (this import takes milliseconds)
        from dpshm.cli._common import noting_ctrl_c

        with noting_ctrl_c():  # a Ctrl-C is kept even where CPython loses its exception
            return _main(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    command = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return 2
        code = int(func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a warning at exit
        return code
    except DpshmError as exc:
        print(f"dpshm {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (embedded, tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
