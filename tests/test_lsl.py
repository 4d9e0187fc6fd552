"""dpshm.lsl against real loopback LSL outlets."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import wait_until
from lsl_util import ramp

from dpshm.errors import (
    AmbiguousStreamError,
    DpshmTimeoutError,
    StreamLostError,
    StreamNotFoundError,
)
from dpshm.lsl import (
    CHANNEL_FORMATS,
    Inlet,
    Outlet,
    find_stream,
    local_clock,
    resolve_streams,
)

pytestmark = pytest.mark.lsl


def pull_all(inlet: Inlet, n: int, timeout: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Pull until ``n`` samples arrived (bounded)."""
    data = np.zeros((n, inlet.spec.n_channels), dtype=inlet.spec.dtype)
    ts = np.zeros(n)
    got = 0

    def done() -> bool:
        nonlocal got
        got += inlet.pull_into(data[got:], ts[got:], timeout=0.05)
        return got >= n

    wait_until(done, timeout)
    return data, ts


def test_find_by_each_field_and_spec(outlets):
    out = outlets.make(type="EEGx", n_channels=3, srate=250.0)
    for kw in ({"name": out.spec.name}, {"source_id": out.spec.source_id}):
        spec = find_stream(**kw, timeout=3.0)
        assert (spec.name, spec.source_id, spec.type) == (
            out.spec.name,
            out.spec.source_id,
            "EEGx",
        )
        assert (spec.n_channels, spec.srate, spec.channel_format) == (3, 250.0, "float32")
        assert spec.dtype == np.float32 and spec.uid == out.spec.uid and spec.hostname
    assert any(s.uid == out.spec.uid for s in resolve_streams(0.3))


def test_not_found_lists_visible_streams(outlets, unique_name):
    out = outlets.make()
    find_stream(source_id=out.spec.source_id, timeout=3.0)  # visible now
    with pytest.raises(StreamNotFoundError) as ei:
        find_stream(name=f"{unique_name}_missing", timeout=0.3)
    msg = str(ei.value)
    assert f"{unique_name}_missing" in msg and "0.3 s" in msg
    assert out.spec.name in msg and "raise the timeout" in msg
    assert isinstance(ei.value, LookupError)


def test_short_settle_never_loses_the_first_match(outlets):
    """The settle resolve may miss the stream found first; the match must still count."""
    out = outlets.make()
    find_stream(source_id=out.spec.source_id, timeout=3.0)  # visible now
    for _ in range(5):
        assert find_stream(name=out.spec.name, timeout=3.0, settle=1e-6).uid == out.spec.uid


def test_ambiguous_lists_candidates(outlets, unique_name):
    a = outlets.make(name=unique_name)
    b = outlets.make(name=unique_name)
    with pytest.raises(AmbiguousStreamError) as ei:
        find_stream(name=unique_name, timeout=3.0, settle=1.0)
    assert a.spec.source_id in str(ei.value) and b.spec.source_id in str(ei.value)
    spec = find_stream(name=unique_name, source_id=b.spec.source_id, timeout=3.0)
    assert spec.uid == b.spec.uid


def test_find_stream_argument_errors():
    with pytest.raises(ValueError, match="at least one of name"):
        find_stream()
    with pytest.raises(ValueError, match="timeout"):
        find_stream(name="x", timeout=0)


def test_quotes_in_name(outlets, unique_name):
    name = f'{unique_name} it\'s "odd"'
    out = outlets.make(name=name)
    # no XPath literal holds both quote kinds: falls back to resolving everything
    assert find_stream(name=name, timeout=1.0).uid == out.spec.uid


@pytest.mark.parametrize("fmt", [f for f in CHANNEL_FORMATS if f != "string"])
def test_numeric_formats_roundtrip(outlets, fmt):
    out = outlets.make(n_channels=3, channel_format=fmt)
    with Inlet(find_stream(source_id=out.spec.source_id, timeout=3.0)) as inlet:
        assert inlet.spec.channel_format == fmt and inlet.spec.dtype == CHANNEL_FORMATS[fmt]
        sent = ramp(0, 40, 3, CHANNEL_FORMATS[fmt])
        t0 = local_clock()
        out.push_chunk(sent[:25])
        out.push_chunk(sent[25:])
        data, ts = pull_all(inlet, 40)
    np.testing.assert_array_equal(data, sent)
    # LSL back-dates each chunk from its push time at the nominal rate (1/100 s)
    np.testing.assert_allclose(np.diff(ts[:25]), 0.01, atol=1e-6)
    assert abs(ts[-1] - t0) < 60


def test_strings_roundtrip(outlets):
    out = outlets.make(type="Markers", n_channels=2, srate=0.0, channel_format="string")
    sent = [["start_trial", "ü€"], ["", "x" * 300], ["stop", "a|b;c"]]
    with Inlet(find_stream(source_id=out.spec.source_id, timeout=3.0)) as inlet:
        assert inlet.spec.is_string and inlet.spec.is_irregular
        out.push_sample(sent[0])
        out.push_chunk(sent[1:])
        data, ts = pull_all(inlet, 3)
    assert data.tolist() == sent
    assert np.all(np.diff(ts) >= 0) and ts[0] > 0


def test_strings_raw_bytes(outlets):
    out = outlets.make(n_channels=1, srate=0.0, channel_format="string")
    spec = find_stream(source_id=out.spec.source_id, timeout=3.0)
    with Inlet(spec, decode_strings=False) as inlet:
        out.push_sample(["é"])
        data, _ = pull_all(inlet, 1)
    assert data[0, 0] == "é".encode()


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["Fz", "Cz", "Pz"], ("Fz", "Cz", "Pz")),
        (["Fz", "", "Pz"], ("Fz", "ch_2", "Pz")),
        (None, ("ch_1", "ch_2", "ch_3")),
    ],
)
def test_channel_labels(outlets, labels, expected):
    out = outlets.make(n_channels=3, channel_names=labels)
    with Inlet(find_stream(source_id=out.spec.source_id, timeout=3.0)) as inlet:
        assert inlet.spec.channel_names == expected
        meta = inlet.spec.metadata()
    assert meta["name"] == out.spec.name and meta["channel_count"] == "3"
    if labels:
        assert [c.get("label", "") for c in meta["desc"]["channels"]["channel"]] == labels


def test_blocking_pull_waits_then_returns(outlets):
    out = outlets.make(n_channels=1)
    with Inlet(find_stream(source_id=out.spec.source_id, timeout=3.0)) as inlet:
        data, ts = np.zeros((10, 1), np.float32), np.zeros(10)
        assert inlet.pull_into(data, ts, timeout=0.05) == 0  # nothing sent: times out
        timer = threading.Timer(0.1, out.push_chunk, args=(np.ones((4, 1)),))
        timer.start()
        try:
            n = inlet.pull_into(data, ts, timeout=5.0)
        finally:
            timer.join(5.0)
        assert 1 <= n <= 4
        assert np.all(data[:n] == 1.0)


def test_pull_into_rejects_bad_buffers(outlets):
    out = outlets.make(n_channels=2)
    with Inlet(find_stream(source_id=out.spec.source_id, timeout=3.0)) as inlet:
        with pytest.raises(ValueError, match="dtype float32"):
            inlet.pull_into(np.zeros((4, 2)), np.zeros(4))
        with pytest.raises(ValueError, match=r"\(k, 2\)"):
            inlet.pull_into(np.zeros((4, 3), np.float32), np.zeros(4))
        with pytest.raises(ValueError, match="C-contiguous"):
            inlet.pull_into(np.zeros((4, 4), np.float32)[:, :2], np.zeros(4))
        assert inlet.pull_into(np.zeros((0, 2), np.float32), np.zeros(0)) == 0


def test_time_correction_and_close_idempotent(outlets):
    out = outlets.make()
    inlet = Inlet(find_stream(source_id=out.spec.source_id, timeout=3.0))
    assert abs(inlet.time_correction(timeout=3.0)) < 1.0  # same host, same clock
    inlet.close()
    inlet.close()
    with pytest.raises(ValueError, match="closed Inlet"):
        inlet.pull_into(np.zeros((1, 2), np.float32), np.zeros(1))


def test_lost_outlet_raises_without_recover(outlets):
    out = outlets.make(n_channels=1)
    with Inlet(find_stream(source_id=out.spec.source_id, timeout=3.0), recover=False) as inlet:
        out.push_sample([1.0])
        pull_all(inlet, 1)
        out.close()
        data, ts = np.zeros((4, 1), np.float32), np.zeros(4)
        with pytest.raises(StreamLostError, match=out.spec.name):
            wait_until(lambda: inlet.pull_into(data, ts, timeout=0.05) < 0, timeout=5.0)


def test_open_timeout_when_outlet_gone(outlets):
    out = outlets.make()
    spec = find_stream(source_id=out.spec.source_id, timeout=3.0)
    out.close()
    with pytest.raises((DpshmTimeoutError, StreamLostError)):
        Inlet(spec, open_timeout=0.5, recover=False)


def test_outlet_argument_errors(unique_name):
    with pytest.raises(ValueError, match="unknown channel_format 'float16'"):
        Outlet(unique_name, channel_format="float16")
    with pytest.raises(ValueError, match="2 channel_names for 3 channels"):
        Outlet(unique_name, n_channels=3, channel_names=["a", "b"])
    out = Outlet(unique_name, n_channels=1, source_id=unique_name)
    out.close()
    out.close()
    with pytest.raises(ValueError, match="closed Outlet"):
        out.push_sample([1.0])


def test_pull_into_strided_timestamps_uses_pylsl_path(outlets):
    """Non-contiguous timestamp buffers go through pylsl's pull_chunk; same result."""
    out = outlets.make(n_channels=2)
    with Inlet(find_stream(source_id=out.spec.source_id, timeout=3.0)) as inlet:
        sent = ramp(0, 6, 2)
        out.push_chunk(sent)
        data, ts2 = np.zeros((6, 2), np.float32), np.zeros((6, 2))
        got = 0

        def done() -> bool:
            nonlocal got
            got += inlet.pull_into(data[got:], ts2[got:, 0], timeout=0.05)
            return got >= 6

        wait_until(done, 5.0)
    np.testing.assert_array_equal(data, sent)
    assert np.all(ts2[:, 0] > 0) and np.all(ts2[:, 1] == 0)


def test_close_from_another_thread_waits_for_blocking_pull(outlets):
    out = outlets.make(n_channels=1)
    inlet = Inlet(find_stream(source_id=out.spec.source_id, timeout=3.0))
    data, ts = np.zeros((4, 1), np.float32), np.zeros(4)
    result: list[object] = []

    def puller() -> None:
        try:
            result.append(inlet.pull_into(data, ts, timeout=0.5))
        except Exception as exc:
            result.append(exc)

    th = threading.Thread(target=puller)
    th.start()
    try:
        wait_until(lambda: inlet._lock.locked(), timeout=5.0, interval=0.001)
        inlet.close()  # must wait for the pull instead of freeing liblsl under it
        assert inlet.closed
    finally:
        th.join(5.0)
    assert result == [0]


OUTLET_ONCE = """
from dpshm import lsl
with lsl.Outlet("quiet_probe", "EEG", 1, 100.0, "float32", source_id="quiet_probe"):
    pass
print("made")
"""


@pytest.mark.skipif(
    Path("/etc/lsl_api/lsl_api.cfg").is_file(), reason="this machine configures liblsl"
)
def test_liblsl_info_lines_hidden_unless_the_user_configures_liblsl(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(root))  # no ~/lsl_api/lsl_api.cfg

    def run(extra: dict[str, str]) -> str:
        r = subprocess.run(
            [sys.executable, "-c", OUTLET_ONCE], env={**env, **extra}, cwd=tmp_path,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0 and r.stdout.strip() == "made", r.stderr
        return r.stderr

    assert "INFO|" not in run({})  # no configuration: liblsl's INFO lines are hidden
    cfg = tmp_path / "mine.cfg"
    cfg.write_text("[log]\nlevel = 0\n")
    assert "INFO|" in run({"LSLAPICFG": str(cfg)})  # the user's configuration wins


def test_format_codes_are_pylsls() -> None:
    """dpshm.formats.FORMATS is the one table of channel formats: its codes are
    liblsl's, as pylsl names them."""
    import pylsl

    from dpshm.formats import FORMATS

    for name, (code, _) in FORMATS.items():
        assert getattr(pylsl, f"cf_{name}") == code, name
