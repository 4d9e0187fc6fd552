"""Unit tests of framing and parsing (dpshm.dareplane.framing, .protocol), with property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpshm.dareplane.framing import (
    AFTER_IDLE,
    NONE,
    NOW,
    WAIT,
    CommandFramer,
    FramingError,
)
from dpshm.dareplane.protocol import error_line, parse_command
from dpshm.errors import ProtocolError

names = st.sampled_from(["UP", "STOP", "START", "SET_PARAMS", "GET_PCOMMS"])
payloads = st.one_of(
    st.just(""),
    st.just("|"),
    st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(), max_size=3).map(
        lambda d: "|" + __import__("json").dumps(d)
    ),
)
terms = st.sampled_from([b";", b"\n", b"\r\n"])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(names, payloads, terms), min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=40), max_size=20),
)
def test_any_segmentation_yields_the_same_commands(cmds, cuts) -> None:
    wire = b"".join((n + p).encode() + t for n, p, t in cmds)
    expected = [(n + p).encode() for n, p, _ in cmds]
    framer = CommandFramer()
    got: list[bytes] = []
    pos = 0
    for c in [*cuts, len(wire)]:
        got += framer.feed(wire[pos : pos + c])
        pos += c
        if pos >= len(wire):
            break
    got += framer.feed(wire[pos:])
    assert got == expected
    assert framer.pending({"UP"}) == NONE


def test_oversize_then_recovers() -> None:
    f = CommandFramer(max_bytes=10)
    (err,) = f.feed(b"x" * 11)
    assert isinstance(err, FramingError) and "exceeds 10 bytes" in err.text
    assert f.feed(b"more junk") == []
    assert f.feed(b"end;UP;") == [b"UP"]


def test_too_deep_json_is_an_error_then_recovers() -> None:
    f = CommandFramer(max_depth=3)
    (err,) = f.feed(b"E|" + b"[" * 4 + b"]" * 4)
    assert "nested deeper than 3" in err.text
    assert f.feed(b";E|[[[]]];") == [b"E|[[[]]]"]


def test_newline_inside_open_json_does_not_end_the_command() -> None:
    f = CommandFramer()
    assert f.feed(b'ECHO|{\n "a": 2,\r\n "b": "}\\"\n"\n}\nUP\n') == [
        b'ECHO|{\n "a": 2,\r\n "b": "}\\"\n"\n}',
        b"UP",
    ]
    # a string with a brace and an escaped quote, split inside the escape
    assert f.feed(b'E|{"s": "\\') == []
    assert f.feed(b'"}"\n}\n') == [b'E|{"s": "\\"}"\n}']


KNOWN = {"STOP", "STOP_WORKER", "START", "UP", "UPDATE", "GET_PCOMMS", "CLOSE"}
BUILTINS = {"STOP", "CLOSE", "GET_PCOMMS", "UP"}


@pytest.mark.parametrize(
    ("pending", "kind", "at_eof"),
    [
        (b"STOP", WAIT, NOW),  # also the start of STOP_WORKER: never by a pause
        (b"UP", WAIT, NOW),  # the start of UPDATE
        (b"CLOSE", NOW, NOW),
        (b"GET_PCOMMS|", NOW, NOW),
        (b'START|{"a": 1}', NOW, NOW),
        (b"START|[1]", NOW, NOW),  # closed: answered (with ERROR) at once
        (b"START", AFTER_IDLE, NOW),
        (b"START|", AFTER_IDLE, NOW),
        (b"START|a|b|", AFTER_IDLE, NOW),
        (b'START|{"a"', WAIT, WAIT),
        (b"START|text", WAIT, WAIT),
        (b"STA", WAIT, WAIT),
        (b"NOPE", WAIT, WAIT),
        (b"  ", NONE, NONE),
    ],
)
def test_pending_classification(pending: bytes, kind: int, at_eof: int) -> None:
    f = CommandFramer()
    assert f.feed(pending) == []
    assert f.pending(KNOWN, BUILTINS) == kind
    assert f.pending(KNOWN, BUILTINS, eof=True) == at_eof


def test_pending_lenient_and_auth() -> None:
    f = CommandFramer()
    f.feed(b"START|text")
    assert f.pending(KNOWN, BUILTINS, lenient=True) == AFTER_IDLE
    f.take()
    f.feed(b"AUTH|s3cret")
    assert f.pending(KNOWN, BUILTINS) == WAIT
    assert f.pending(KNOWN, BUILTINS, auth=True) == AFTER_IDLE


def test_error_line_is_one_line() -> None:
    assert error_line("bad\nthing  here") == "ERROR bad thing here\n"


def test_parse_forms() -> None:
    assert parse_command(b"PC").kwargs == {}
    assert parse_command(b"PC|").kwargs == {}
    c = parse_command(b'PC|a|b|{"x": [1]}')
    assert (c.name, c.args, c.kwargs) == ("PC", ("a", "b"), {"x": [1]})
    assert parse_command('PC|{"t": "é"}'.encode()).kwargs == {"t": "é"}
    with pytest.raises(ProtocolError, match="bad JSON payload for 'PC'"):
        parse_command(b"PC|text")
    with pytest.raises(ProtocolError, match="is a int"):
        parse_command(b"PC|3")


def test_a_command_dribbled_over_segments_waits_for_its_terminator() -> None:
    f = CommandFramer()
    f.feed(b"STA")
    f.feed(b"RT")
    assert f.pending(KNOWN, BUILTINS) == WAIT  # more may follow: '|{...}'
    assert f.pending(KNOWN, BUILTINS, eof=True) == NOW
    assert f.feed(b";START") == [b"START"]
    assert f.pending(KNOWN, BUILTINS) == WAIT  # the tail of a stream of terminated commands
    assert f.feed(b";") == [b"START"]
    assert f.feed(b"START") == []
    assert f.pending(KNOWN, BUILTINS) == AFTER_IDLE  # alone in its segment: 0.0.21's form
