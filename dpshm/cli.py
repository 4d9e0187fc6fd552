"""The ``dpshm`` command line.

Each sub-command is one ``_cmd_<name>`` function plus its parser in
:func:`build_parser`; heavy modules are imported inside the command so that
``dpshm --help`` stays fast.
"""

from __future__ import annotations

import argparse
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
    from dpshm.cli_supervisor import add_commands as add_supervisor_commands

    add_supervisor_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except DpshmError as exc:
        print(f"dpshm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
