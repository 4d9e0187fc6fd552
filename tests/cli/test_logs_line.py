"""``dpshm logs`` prints one line per bus record, read through dpshm.dareplane.logrecord."""

from __future__ import annotations

import logging
import sys

from dpshm.cli.streams import _format_record
from dpshm.dareplane.logrecord import record_to_dict


def test_one_line_per_record_whatever_the_message() -> None:
    rec = logging.LogRecord("w.x", logging.WARNING, __file__, 1, "a %s\n%s", ("100%s", "b"), None)
    line = _format_record(record_to_dict(rec))
    assert line.endswith("WARNING w.x: a 100%s\\nb") and "\n" not in line


def test_traceback_lines_are_marked() -> None:
    try:
        raise KeyError("k")
    except KeyError:
        rec = logging.LogRecord("w.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    first, *rest = _format_record(record_to_dict(rec)).split("\n")
    assert (
        first.endswith("ERROR   w.x: failed")
        and rest[0] == "  | Traceback (most recent call last):"
    )
    assert all(ln.startswith("  | ") for ln in rest) and rest[-1] == "  | KeyError: 'k'"
