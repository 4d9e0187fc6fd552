"""The stream table and the live status off a terminal: state with its reason, where
streams come from, the name note, and the plain one-line-per-5-s output."""

from __future__ import annotations

import io

from dpshm.cli.live import LiveStatus
from dpshm.cli.screen import format_table


def _stream(name: str, sid: str, **kw: object) -> dict[str, object]:
    s = {
        "name": name, "type": "EEG", "channels": 4, "srate": 250.0, "measured_rate": 250.0,
        "head": 1000, "lag_s": 0.001, "lost": 0, "hostname": "amp-pc", "source_id": sid,
        "stale": False, "state": "ok", "reason": "",
    }  # fmt: skip
    s.update(kw)
    return s


STATUS = {
    "namespace": "lab",
    "pid": 42,
    "streams": {
        "a": _stream("eeg", "amp-1"),
        "b": _stream("eeg", "amp-2", stale=True, state="STALE", reason="outlet closed"),
        "c": _stream("emg", "amp-3", stale=True, state="ERROR", reason="cannot open inlet"),
    },
}


def test_table_states_origin_and_name_note():
    lines = format_table(STATUS).splitlines()
    assert lines[0] == "namespace 'lab', supervisor pid 42"
    rows = {tuple(line.split()[:1] + line.split()[9:11]): line for line in lines[2:5]}
    assert set(rows) == {
        ("eeg", "amp-1", "ok"),
        ("eeg", "amp-2", "STALE:"),
        ("emg", "amp-3", "ERROR:"),
    }
    assert rows[("eeg", "amp-2", "STALE:")].endswith("STALE: outlet closed")
    assert rows[("emg", "amp-3", "ERROR:")].endswith("ERROR: cannot open inlet")
    assert all(" amp-pc " in line for line in lines[2:5])
    assert lines[5].startswith("note: 2 streams are named 'eeg' (source_id 'amp-1' on amp-pc,")
    assert len(lines) == 6  # one note: 'emg' is unique


def test_plain_output_off_a_terminal():
    out = io.StringIO()  # not a terminal: line-based, nothing redrawn, no escape codes
    live = LiveStatus(out)
    with live:
        live(STATUS, extra=["consumer: 10 samples read"])
        live(STATUS)  # within 5 s of the previous line: nothing
    text = out.getvalue()
    assert "\x1b" not in text and text.count("[dpshm] 3 stream(s)") == 1
    assert "eeg: head 1000 250 Hz;" in text and "STALE: outlet closed" in text
    assert "emg: head 1000 250 Hz ERROR: cannot open inlet" in text
    assert text.endswith("[dpshm] consumer: 10 samples read\n")
