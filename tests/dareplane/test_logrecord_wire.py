"""Property tests of the wire form (dpshm.dareplane.logrecord) against the
original receiver's own record handling, run in-process on a socket pair.

For any message and args that ``logging`` formats, a record encoded by dpshm,
or made wire-safe by dpshm and encoded by dareplane-utils' ``UJsonSocketHandler``,
reads as the same text in the original receiver and in dpshm's.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import types

import pytest
from helpers import import_original
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpshm._logging import make_wire_safe
from dpshm.dareplane.logrecord import dict_to_record, encode_record

pytest.importorskip("dareplane_utils")
_server = import_original("dareplane_utils.logging.server")
_ujson = import_original("dareplane_utils.logging.ujson_socket_handler")

CAPTURE = "t.wire.original"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())  # raises as the original's handlers would


def original_receiver_reads(frames: list[bytes]) -> list[str]:
    """The texts dareplane-utils' LogRecordStreamHandler.handle makes of ``frames``.

    Raises what it raises (its ``msg % args`` TypeError is the known crash).
    """
    a, b = socket.socketpair()
    try:
        b.sendall(b"".join(frames))
        b.close()
        handler = object.__new__(_server.LogRecordStreamHandler)
        handler.connection = a
        handler.server = types.SimpleNamespace(logname=CAPTURE)
        cap = _Capture()
        target = logging.getLogger(CAPTURE)
        target.propagate = False
        target.addHandler(cap)
        try:
            handler.handle()
        finally:
            target.removeHandler(cap)
        return cap.texts
    finally:
        a.close()


_pieces = st.sampled_from(
    ["%s", "%d", "%r", "%%", "%%s", "s", "%5s", "text", " ", "%(k)s", "100%", "\n"]
)
_args = st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=6)), max_size=3)


def _record(msg: str, args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom %s")
        except ValueError:
            exc_info = sys.exc_info()
    # a file of dpshm's: as records logged by dpshm's own code
    rec = logging.LogRecord("dpshm.t", logging.INFO, __file__, 1, msg, None, exc_info)
    rec.args = args  # as LogRecord.__init__ would, without its one-mapping unwrapping
    return rec


@st.composite
def formattable(draw: st.DrawFn) -> tuple[str, object]:
    msg = "".join(draw(st.lists(_pieces, max_size=6)))
    if "%(k)s" in msg and draw(st.booleans()):
        args: object = {"k": draw(st.text(max_size=5))}
    else:
        args = tuple(draw(_args))
    rec = _record(msg, args)
    try:
        rec.getMessage()
    except (TypeError, ValueError, KeyError):
        args = ()
        msg = msg.replace("%", "%%")
    return msg, args


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(formattable(), st.booleans())
def test_dpshm_frames_read_as_the_text_everywhere(ma: tuple[str, object], exc: bool) -> None:
    msg, args = ma
    rec = _record(msg, args, exc)
    text = rec.getMessage()
    frame = encode_record(rec)
    assert original_receiver_reads([frame]) == [text]
    assert dict_to_record(json.loads(frame[4:])).getMessage() == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(formattable(), st.booleans())
def test_wire_safe_records_through_the_original_handler(ma: tuple[str, object], exc: bool) -> None:
    """dpshm's records on a module's dareplane-utils logger (UJsonSocketHandler)."""
    msg, args = ma
    rec = _record(msg, args, exc)
    text = rec.getMessage()
    make_wire_safe(rec)
    if not rec.__dict__.get("dpshm_escaped"):
        assert rec.getMessage() == text  # local handlers see the same text
    h = _ujson.UJsonSocketHandler("127.0.0.1", 9)
    try:
        frame = h.makePickle(rec)
    finally:
        h.close()
    assert original_receiver_reads([frame]) == [text]
    assert dict_to_record(json.loads(frame[4:])).getMessage() == text


def test_the_original_receiver_crashes_on_plain_percent_args() -> None:
    """Guards the harness: the original's own handler output does crash it."""
    h = _ujson.UJsonSocketHandler("127.0.0.1", 9)
    try:
        frame = h.makePickle(_record("%s and %s", ("a", "b")))
    finally:
        h.close()
    with pytest.raises(TypeError, match="not enough arguments"):
        original_receiver_reads([frame])
