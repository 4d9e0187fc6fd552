"""Log records on the wire and in the log file.

The one place that encodes, decodes and formats them.

Wire format (port 9020, byte-compatible with dareplane-utils 0.0.21-0.0.24)::

    +----------------------+-----------------------------------------+
    | length: uint32, big  | UTF-8 JSON object of the LogRecord's    |
    | endian (">L")        | attributes (see :func:`record_to_dict`) |
    +----------------------+-----------------------------------------+

dpshm sends the *formatted* message: ``msg`` is the text and ``args`` is
``[]``. The original receiver runs ``msg % args`` (args a list) whenever
``"%s"`` is in ``msg``, which crashes on two or more ``%``-args and shows one
as ``[value]``; with the text and no args it shows the text. A text that
itself contains ``"%s"`` is sent with every ``%`` doubled and the key
``"dpshm_escaped": true``: the original's ``msg % []`` undoes the doubling,
and :func:`dict_to_record` does the same.

The ZeroMQ log bus of the supervisor (:mod:`dpshm.shm.bus`) publishes the same
dicts. :func:`dict_to_record` reads what any sender produces (dpshm, the
original ``UJsonSocketHandler`` in both its normal and its everything-as-string
fallback form, mapping args, wrong arg counts, non-numeric times) and notes in
the message what it had to repair. :class:`LineFormatter` writes one record
per line: control characters in the message are escaped, traceback lines are
marked as continuation lines, so no record can forge another.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import math
import struct
import time
from typing import Any

from dpshm._logging import ESCAPED_ATTR

__all__ = [
    "CONTINUATION",
    "FORMAT",
    "MAX_RECORD_BYTES",
    "LineFormatter",
    "continuation",
    "dict_to_record",
    "encode_record",
    "escape_controls",
    "record_message",
    "record_text",
    "record_to_dict",
]

FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
#: Prefix of every line of a traceback or stack in the log file.
CONTINUATION = "  | "
_FORMATTER = logging.Formatter(FORMAT)
_PRIVATE = ("_dpshm_safe", "_dpshm_disabled")
_MAX_LITERAL_ARGS = 65536  # longest stringified args the receiver parses back

# control characters (C0, DEL, C1) and the Unicode line/paragraph separators;
# a tab stays (it cannot start a line)
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_controls(text: str) -> str:
    r"""``text`` with newlines and other control characters as backslash escapes.

    A tab stays. ``"a\nb"`` becomes ``"a\\nb"``: one line whatever the input.
    """
    if text.isprintable():
        return text
    return text.translate(_ESCAPES)


def continuation(block: str | None) -> str:
    """``block`` (a traceback) as lines to append to a record's line.

    Each line starts with a newline and :data:`CONTINUATION` and has its
    control characters escaped; ``""`` for an empty block.
    """
    if not block:
        return ""
    return "".join("\n" + CONTINUATION + escape_controls(ln) for ln in str(block).splitlines())


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    try:
        return str(value)
    except Exception:
        return repr(value)


def record_text(record: logging.LogRecord) -> str:
    """The message of ``record`` as a handler shows it; never raises.

    A record whose ``msg % args`` fails (wrong number of args) keeps the
    template and the args as text: ``"too few %s %s ['only']"``.
    """
    if record.__dict__.get(ESCAPED_ATTR) and not record.args:
        return str(record.msg).replace("%%", "%")
    try:
        return record.getMessage()
    except Exception:
        args = record.args
        shown = list(args) if isinstance(args, tuple) else args
        return f"{record.msg} {shown}".rstrip()


def _set_wire_message(out: dict[str, Any], record: logging.LogRecord) -> None:
    """Put the wire's ``msg``, ``args`` (and the escape marker) of ``record`` into ``out``."""
    escaped = True
    if record.__dict__.get(ESCAPED_ATTR) and not record.args:
        out["msg"] = str(record.msg)  # already escaped by make_wire_safe
    else:
        text = record_text(record)
        escaped = "%s" in text
        out["msg"] = text.replace("%", "%%") if escaped else text
    out["args"] = []
    if escaped:
        out[ESCAPED_ATTR] = True
    else:
        out.pop(ESCAPED_ATTR, None)


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    """The JSON-ready dict of a LogRecord: exactly what goes on the wire.

    Every attribute of the record is kept, values JSON cannot carry become
    strings. ``msg`` is the formatted message and ``args`` is ``[]`` (see the
    module notes; ``"dpshm_escaped": true`` when ``%`` had to be doubled).
    A record with ``exc_info`` and no ``exc_text`` yet gets the formatted
    traceback in ``exc_text``; ``exc_info`` travels as its string.

    Parameters
    ----------
    record : logging.LogRecord

    Returns
    -------
    dict
        Serialisable with ``json.dumps`` without a ``default``.
    """
    if record.exc_info and not record.exc_text:
        with contextlib.suppress(Exception):
            record.exc_text = _FORMATTER.formatException(record.exc_info)
    out = {str(k): _jsonable(v) for k, v in record.__dict__.items() if k not in _PRIVATE}
    if record.exc_info:
        out["exc_info"] = str(record.exc_info)  # as the original handler's fallback
    _set_wire_message(out, record)
    return out


_DUMPS_FAST = json.JSONEncoder(default=str, ensure_ascii=False).encode


#: Largest JSON body dpshm sends (the default ``max_record_bytes`` of its receiver).
MAX_RECORD_BYTES = 1 << 20


_CORE_FIELDS = ("name", "levelname", "levelno", "created", "msecs", "relativeCreated",
                "pathname", "lineno", "funcName", "process", "thread", "threadName")  # fmt: skip


def _shrunk(record: logging.LogRecord, size: int, max_bytes: int) -> bytes:
    """A body of at most ``max_bytes``: the main fields, every text cut, saying so.

    ASCII JSON takes at most 12 bytes per character (an escaped surrogate
    pair), so cutting each of the (at most 8) texts to ``(max_bytes - 512) // 96``
    characters always fits.
    """
    d = record_to_dict(record)
    keep: dict[str, Any] = {k: d[k] for k in _CORE_FIELDS if k in d}
    keep["msg"], keep["exc_text"] = d.get("msg"), d.get("exc_text")
    cut = max(1, (max_bytes - 512) // 96)
    for key, value in keep.items():
        if isinstance(value, str) and len(value) > cut:
            keep[key] = value[:cut] + "..."
    keep["msg"] = f"{keep['msg']} [truncated by dpshm: {size} bytes, limit {max_bytes}]"
    keep["args"] = []
    if d.get(ESCAPED_ATTR):
        keep[ESCAPED_ATTR] = True
    return json.dumps(keep, ensure_ascii=True).encode()


def encode_record(record: logging.LogRecord, max_bytes: int | None = None) -> bytes:
    """Frame a record for the wire: 4-byte big-endian length + UTF-8 JSON.

    The body is ``json.dumps(record_to_dict(record))``; a record without
    ``exc_info`` takes a faster path with the same result. With ``max_bytes``
    a longer body keeps its main fields and has its message and traceback cut,
    ending in ``[truncated by dpshm: the record was N bytes, the limit is M]``
    (a receiver would drop the whole record otherwise).
    """
    d = record.__dict__
    body = None
    if not d.get("exc_info"):
        fast = {k: v for k, v in d.items() if k not in _PRIVATE}
        _set_wire_message(fast, record)
        try:
            body = _DUMPS_FAST(fast)
        except (TypeError, ValueError):
            body = None
    if body is None:
        body = json.dumps(record_to_dict(record), ensure_ascii=False)
    data = body.encode("utf-8", "replace")
    if max_bytes is not None and len(data) > max_bytes:
        data = _shrunk(record, len(data), max_bytes)
    return struct.pack(">L", len(data)) + data


# -- reading --------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _received_args(args: Any) -> tuple[Any, ...] | dict[str, Any]:
    """``args`` as sent (list, object, or the fallback's ``str(args)``) as LogRecord wants."""
    if args is None:
        return ()
    if isinstance(args, dict):
        return args if args else ()  # a mapping, as LogRecord keeps one dict arg
    if isinstance(args, (list, tuple)):
        return tuple(args)
    if isinstance(args, str):
        text = args.strip()
        if text in ("", "()", "[]", "None", "{}"):
            return ()
        if len(text) <= _MAX_LITERAL_ARGS:  # str(args) of the original's fallback
            with contextlib.suppress(Exception):  # literal_eval runs no code
                value = ast.literal_eval(text)
                if isinstance(value, (tuple, list)):
                    return tuple(value)
                if isinstance(value, dict):
                    return value if value else ()
        return (args,)
    return (args,)


def record_message(rec: dict[str, Any]) -> str:
    """The message of a received record dict (any sender's ``msg`` and ``args``).

    Undoes dpshm's ``%`` escape, formats list, mapping or stringified args;
    never raises: arguments that do not fit the template are shown beside it.
    :func:`dict_to_record` puts this text into the record it rebuilds.
    """
    msg = rec.get("msg", "")
    if not isinstance(msg, str):
        msg = json.dumps(msg) if isinstance(msg, (dict, list)) else str(msg)
    if rec.get(ESCAPED_ATTR) is True:
        return msg.replace("%%", "%")
    probe = logging.LogRecord("", 0, "", 0, msg, None, None)
    probe.args = _received_args(rec.get("args"))
    return record_text(probe)


def dict_to_record(obj: dict[str, Any]) -> logging.LogRecord:
    """Rebuild a received record; never raises for any JSON object.

    The result has the final text in ``msg`` and ``args = ()``. What had to be
    repaired is said at the end of the message in brackets, e.g.
    ``[dpshm logserver: created='abc' is not a number; time of receipt used]``:
    a record is never dropped or changed silently.
    """
    notes: list[str] = []
    # a key named after a LogRecord method (getMessage) would replace the method
    fields = {k: v for k, v in obj.items() if not callable(getattr(logging.LogRecord, k, None))}
    record = logging.makeLogRecord(fields)
    now = time.time()
    created = _number(obj.get("created"))
    if created is None:
        if "created" in obj:
            notes.append(f"created={obj['created']!r:.80} is not a number; time of receipt used")
        else:
            notes.append("no 'created' time; time of receipt used")
        created = now
    record.created = created
    msecs = _number(obj.get("msecs"))
    record.msecs = msecs if msecs is not None else (created - int(created)) * 1000
    rel = _number(obj.get("relativeCreated"))
    record.relativeCreated = rel if rel is not None else 0.0
    levelno = obj.get("levelno")
    if not isinstance(levelno, int) or isinstance(levelno, bool):
        num = _number(levelno)
        if num is not None and num == int(num):
            levelno = int(num)
        else:
            named = logging.getLevelName(str(obj.get("levelname", "")).upper())
            levelno = named if isinstance(named, int) else logging.INFO
            notes.append(f"levelno={obj.get('levelno')!r:.40} is not a level; used {levelno}")
    record.levelno = levelno
    if not isinstance(obj.get("levelname"), str):
        record.levelname = logging.getLevelName(levelno)
    if not isinstance(obj.get("name"), str):
        record.name = str(obj.get("name", "?"))
    text = record_message(obj)
    if notes:
        text = f"{text} [dpshm logserver: {'; '.join(notes)}]"
    record.msg, record.args = text, ()
    record.__dict__.pop(ESCAPED_ATTR, None)
    record.exc_info = None  # the traceback travels as text in exc_text
    for attr in ("exc_text", "stack_info"):
        value = record.__dict__.get(attr)
        if value in ("None", "") or (value is not None and not isinstance(value, str)):
            setattr(record, attr, None if value in ("None", "") else str(value))
    exc_info = obj.get("exc_info")
    if record.exc_text is None and isinstance(exc_info, str) and exc_info not in ("", "None"):
        # the original handler stringified exc_info before any traceback was rendered
        record.exc_text = f"(no traceback sent) exc_info: {exc_info}"
    return record


# -- writing --------------------------------------------------------------------------


class LineFormatter(logging.Formatter):
    """``asctime - name - levelname - message``, one line per record.

    Control characters in name, level and message are escaped
    (:func:`escape_controls`); traceback and stack lines follow, each prefixed
    with :data:`CONTINUATION`, so a line that starts with a time is always the
    start of a record.
    """

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """One line (continuation lines marked), control characters escaped."""
        try:
            asctime = self.formatTime(record, self.datefmt)
        except Exception:
            asctime = f"created={record.created!r}"
        line = " - ".join(
            (
                asctime,
                escape_controls(str(record.name)),
                escape_controls(str(record.levelname)),
                escape_controls(record_text(record)),
            )
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        line += continuation(record.exc_text)
        if record.stack_info:
            line += continuation(self.formatStack(record.stack_info))
        return line
