"""``dpshm ls``, ``dpshm tail`` and ``dpshm logs``: looking at the shared streams."""

from __future__ import annotations

import argparse
import json
import logging
import math
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
        "and measured rate, head, lag behind the outlet, lost samples, host (and the "
        "producer's pid for a published stream), source_id, state.",
    )  # fmt: skip
    ns_arg(p)
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "tail", help="print a stream's newest values or markers", formatter_class=FMT,
        description="Follow one shared stream. Numeric: at most --rate lines a second, each "
        "the newest sample and how many arrived since the previous line. Markers: every one.",
    )  # fmt: skip
    p.add_argument(
        "name", nargs="?", default=None,
        help="LSL stream name (or ring name); optional with --type or --source-id",
    )  # fmt: skip
    p.add_argument("--type", default=None, help="pick the stream by its LSL type (e.g. EEG)")
    p.add_argument("--source-id", default=None, help="pick one of several same-named streams")
    ns_arg(p)
    p.add_argument("--channels", type=int, default=8, help="channels to show")
    p.add_argument(
        "--rate", type=float, default=DEFAULT_TAIL_RATE,
        help="most lines per second for numeric streams (0: one per chunk); markers: all",
    )  # fmt: skip
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


DEFAULT_TAIL_RATE = 5.0  # lines per second: readable, and the newest sample still shows


def cmd_tail(args: argparse.Namespace) -> int:
    """``dpshm tail NAME``: at most ``--rate`` lines a second, every marker."""
    from dpshm.shm.view import SharedStreamView

    if not (math.isfinite(args.rate) and args.rate >= 0):
        raise C.ConfigError(
            f"--rate must be lines per second >= 0 (0: one per chunk), got {args.rate!r}"
        )
    if args.channels < 1:
        raise C.ConfigError(f"--channels must be >= 1, got {args.channels}")
    if args.name is None and args.type is None and args.source_id is None:
        raise C.ConfigError(
            "dpshm tail needs a stream: give its NAME, --type or --source-id "
            "(`dpshm ls` shows what is shared)"
        )
    stop = stop_on_signals()
    done = until(args.duration)
    period = 1.0 / args.rate if args.rate else 0.0
    with SharedStreamView(
        args.name, type=args.type, source_id=args.source_id, namespace=args.namespace
    ) as v:
        strings = v.format == "string"
        origin = v.meta.get("lsl", {})  # where the supervisor's stream comes from
        producer = v.meta.get("producer")  # a stream published by a process
        where = (
            f" from host {origin.get('hostname')!r}, source_id {origin.get('source_id')!r}"
            if origin
            else ""
        )
        if isinstance(producer, dict):
            where = f", published by pid {producer['pid']}, source_id {producer['source_id']!r}"
        print(
            f"{v.name}: {v.n_channels} ch {v.format} @ {fmt_rate(v.srate)}{where} (Ctrl-C stops)",
            flush=True,
        )
        if strings:
            print(f"{'time (LSL s)':>14}  marker (every one)", flush=True)
        else:
            line = _TailLine(v.channel_names[: args.channels], v.n_channels, v.format)
            print(line.header(args.rate), flush=True)
        pending, last = 0, 0.0
        newest: tuple[float, Any] | None = None
        while not stop.is_set() and not done():
            due = last + period - time.monotonic()
            if v.wait(max(due, 0.0) if pending else 0.5):
                data, ts, lost = v.read_new()
                if lost:
                    print(f"... {lost} samples lost (reading too slowly)")
                if strings:
                    for row, t in zip(data, ts, strict=True):
                        print(f"{t:14.4f}  {' | '.join(map(str, row))}")
                elif len(ts):
                    pending += len(ts)
                    newest = (float(ts[-1]), data[-1])
            if pending and newest is not None and time.monotonic() - last >= period:
                print(line.format(newest[0], pending, newest[1]))
                pending, last = 0, time.monotonic()
            sys.stdout.flush()
    return 0


class _TailLine:
    """``dpshm tail``'s columns: newest timestamp, samples since the last line, values."""

    def __init__(self, names: list[str], n_channels: int, fmt: str):
        self.names = names
        self.widths = [max(10, len(n)) for n in names]
        self.more = n_channels - len(names)
        self.spec = ".4f" if fmt in ("float32", "double64") else "d"

    def header(self, rate: float) -> str:
        every = f"at most {rate:g} lines/s" if rate else "one per chunk"
        cols = " ".join(n.rjust(w) for n, w in zip(self.names, self.widths, strict=True))
        more = f" (+{self.more} ch not shown)" if self.more else ""
        return f"{'time (LSL s)':>14}  {'new':>6}  {cols}{more}   [newest sample, {every}]"

    def format(self, t: float, new: int, row: Any) -> str:
        vals = [f"{v:{w}{self.spec}}" for v, w in zip(row.tolist(), self.widths, strict=False)]
        return f"{t:14.4f}  {'+' + str(new):>6}  {' '.join(vals)}"


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
