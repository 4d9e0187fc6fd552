"""``dpshm ls``, ``dpshm tail`` and ``dpshm logs``: looking at the shared streams."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from dpshm import config as C
from dpshm.cli._common import FMT, namespace, ns_arg, stop_on_signals, until
from dpshm.cli.screen import fmt_rate, format_table


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``ls``, ``tail`` and ``logs`` to the ``dpshm`` parser."""
    p = sub.add_parser(
        "ls", help="list the shared streams", formatter_class=FMT,
        description="Table of the streams the supervisor shares: type, channels, nominal "
        "and measured rate, head, lag behind the outlet, lost samples, stale.",
    )  # fmt: skip
    ns_arg(p)
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "tail", help="print a stream's newest values or markers", formatter_class=FMT,
        description="Follow one shared stream: the newest sample of each chunk (numeric) "
        "or every marker (strings).",
    )  # fmt: skip
    p.add_argument("name", help="LSL stream name (or ring name)")
    p.add_argument("--source-id", default=None, help="pick one of several same-named streams")
    ns_arg(p)
    p.add_argument("--channels", type=int, default=8, help="channels to show")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser(
        "logs", help="follow the supervisor's log records", formatter_class=FMT,
        description="Print the JSON log records the supervisor and its feeds publish on "
        "ZeroMQ.",
    )  # fmt: skip
    ns_arg(p)
    p.add_argument("--level", default="DEBUG", help="lowest level shown")
    p.add_argument("--json", action="store_true", help="print each record as JSON")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=cmd_logs)


def cmd_ls(args: argparse.Namespace) -> int:
    """``dpshm ls``."""
    from dpshm.shm.registry import list_streams

    full = list_streams(namespace(args))
    print(json.dumps(full, indent=1) if args.json else format_table(full))
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    """``dpshm tail NAME``."""
    import numpy as np

    from dpshm.shm.view import SharedStreamView

    stop = stop_on_signals()
    done = until(args.duration)
    with SharedStreamView(args.name, source_id=args.source_id, namespace=args.namespace) as v:
        strings = v.format == "string"
        print(
            f"{args.name}: {v.n_channels} ch {v.format} @ {fmt_rate(v.srate)} (Ctrl-C stops)",
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

    ns = namespace(args)
    reg = registry.read_registry(ns)
    level = logging.getLevelName(str(args.level).upper())
    if not isinstance(level, int):
        raise C.ConfigError(f"--level {args.level!r} is not a level; use DEBUG, INFO, WARNING")
    stop = stop_on_signals()
    done = until(args.duration)
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
