"""Unit tests of framing and parsing (dpshm.dareplane.protocol), including property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpshm.dareplane.protocol import (
    COMPLETE_AFTER_IDLE,
    COMPLETE_NOW,
    INCOMPLETE,
    CommandFramer,
    completeness,
    parse_command,
)
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
        out, over = framer.feed(wire[pos : pos + c])
        assert over == 0
        got += out
        pos += c
        if pos >= len(wire):
            break
    got += framer.feed(wire[pos:])[0]
    assert got == expected
    assert not framer.pending


def test_oversize_then_recovers() -> None:
    f = CommandFramer(max_bytes=10)
    assert f.feed(b"x" * 11) == ([], 11)
    assert f.feed(b"more junk") == ([], 0)
    assert f.feed(b"end;UP;") == ([b"UP"], 0)


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


def test_completeness() -> None:
    known = {"UP", "UPDATE", "STOP", "START"}
    assert completeness(b"STOP", known, {"STOP", "UP"}) == COMPLETE_NOW
    assert completeness(b"UP", known, {"STOP", "UP"}) == COMPLETE_AFTER_IDLE  # prefix of UPDATE
    assert completeness(b'START|{"a": 1}', known) == COMPLETE_NOW
    assert completeness(b"START", known) == COMPLETE_AFTER_IDLE
    assert completeness(b'START|{"a"', known) == INCOMPLETE
    assert completeness(b"STA", known) == INCOMPLETE
