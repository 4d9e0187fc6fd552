"""SharedRing: layout, formats, ownership, errors, cleanup."""

from __future__ import annotations

import _posixshmem
import contextlib
import gc
import mmap
import os
import re
import struct

import numpy as np
import pytest

from dpshm.errors import (
    DpshmError,
    RingFormatError,
    RingNotFoundError,
    RingOwnershipError,
    RingSpaceError,
)
from dpshm.formats import FORMATS, decode_strings, resolve_format
from dpshm.shm.ring import (
    _H_PENDING,
    SharedRing,
    list_rings,
    ring_info,
    segment_name,
    unlink_ring,
)
from dpshm.shm.view import SharedStreamView


def _seg_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{segment_name(name)}")


@pytest.fixture
def make_ring(unique_name):
    """Factory: ``make_ring(**kwargs)`` creates rings that are unlinked after the test."""
    made: list[SharedRing] = []
    counter = iter(range(1000))

    def make(name: str | None = None, **kwargs) -> SharedRing:
        kwargs.setdefault("n_channels", 3)
        kwargs.setdefault("capacity", 16)
        ring = SharedRing.create(name or f"{unique_name}_{next(counter)}", **kwargs)
        made.append(ring)
        return ring

    yield make
    for ring in made:
        ring.unlink()
        ring.close()


@contextlib.contextmanager
def in_flight(ring: SharedRing, k: int):
    """Hold the owner ``ring`` in the middle of a write of ``k`` rows (``pending = head + k``,
    rows not written yet), as a reader racing the writer sees it."""
    ring._hot[_H_PENDING] = ring.head + k  # the writer's step W1 (see dpshm.shm.ring)
    try:
        yield
    finally:
        ring._hot[_H_PENDING] = ring.head


def _ints(start: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(start, start + k)
    return idx[:, None].astype(np.int32), idx.astype(np.float64)


def test_read_counts_each_gap_right_before_the_rows_after_it(make_ring):
    ring = make_ring(n_channels=1, capacity=10, dtype="int32")
    with SharedRing.attach(ring.name) as att:

        def read(cursor: int) -> tuple[list[int], int, int]:
            d, t, lost, cursor = att.read(cursor)
            assert d.ravel().tolist() == t.astype(int).tolist()  # rows match timestamps
            return t.astype(int).tolist(), lost, cursor

        ring.write(*_ints(0, 6))
        assert read(0) == (list(range(6)), 0, 6)
        ring.write(*_ints(6, 14))  # head 20: samples 6..9 are gone
        assert read(6) == (list(range(10, 20)), 4, 20)
        ring.write(*_ints(20, 4))  # head 24, cursor 20
        with in_flight(ring, 10):  # a chunk of a whole ring overwrites 20..23 mid-copy
            assert read(20) == ([], 0, 20)  # no rows: no loss reported, cursor kept
        ring.write(*_ints(24, 10))  # that chunk lands: head 34
        assert read(20) == (list(range(24, 34)), 4, 34)  # the gap, then its rows
        ring.write(*_ints(34, 2))
        with in_flight(ring, 9):  # pending 45: samples < 35 may be overwritten
            assert read(34) == ([35], 1, 36)
            assert read(36) == ([], 0, 36)  # nothing new while a chunk is in flight
        assert read(36) == ([], 0, 36)


def test_create_attach_roundtrip_and_header(make_ring):
    ring = make_ring(
        n_channels=2, capacity=8, dtype="float32", srate=250.0,
        channel_names=["Cz", "Pz"], meta={"unit": "uV"},
    )  # fmt: skip
    assert _seg_exists(ring.name)
    data = np.arange(20, dtype=np.float32).reshape(10, 2)
    assert ring.write(data, np.arange(10.0)) == 10
    with SharedRing.attach(ring.name) as att:
        assert not att.owner
        assert (att.format, att.dtype, att.n_channels, att.capacity) == ("float32", "<f4", 2, 8)
        assert att.srate == 250.0 and att.head == 10 and att.pending == 10
        assert att.channel_names == ["Cz", "Pz"] and att.meta == {"unit": "uV"}
        assert att.generation == ring.generation and att.writer_pid == os.getpid()
        d, t = att.window(8)
        np.testing.assert_array_equal(d, data[2:])
        np.testing.assert_array_equal(t, np.arange(2.0, 10.0))
        assert not d.flags.writeable and not t.flags.writeable
        with pytest.raises(ValueError):
            d[0, 0] = 1.0
    info = ring_info(ring.name)
    assert info["writer_alive"] and info["head"] == 10 and info["name"] == ring.name
    assert ring.name in list_rings()


def test_header_setters_visible_to_attachers(make_ring):
    ring = make_ring()
    with SharedRing.attach(ring.name) as att:
        assert not att.stale and att.time_offset == 0.0 and att.last_write == 0.0
        ring.set_stale()
        ring.set_time_offset(-0.125)
        ring.write(np.zeros((1, 3), np.float32), [1.0])
        assert att.stale and att.time_offset == -0.125 and att.last_write > 0
        ring.set_stale(False)
        assert not att.stale
        with pytest.raises(RingOwnershipError, match="read-only"):
            att.set_stale()
        with pytest.raises(RingOwnershipError):
            att.write(np.zeros((1, 3), np.float32), [1.0])
        with pytest.raises(RingOwnershipError, match="unlink"):
            att.unlink()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_and_alias(make_ring, fmt):
    ring = make_ring(n_channels=2, capacity=4, dtype=fmt)
    assert ring.format == fmt
    if fmt == "string":
        rows = [["a", "b"], ["ç", ""], ["x" * 3, "y"]]
        ring.write(rows, [1, 2, 3])
        d, _ = ring.window(3)
        assert d.dtype.kind == "S"
        assert decode_strings(d).tolist() == rows
    else:
        rows = np.array([[1, -2], [3, 4], [5, 6]], dtype=ring.dtype)
        ring.write(rows, [1, 2, 3])
        np.testing.assert_array_equal(ring.window(3)[0], rows)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (np.float32, "float32"), ("float64", "double64"), (np.dtype("<f8"), "double64"),
        ("double64", "double64"), (np.int8, "int8"), ("int16", "int16"), (np.int32, "int32"),
        ("int64", "int64"), (str, "string"), ("string", "string"), (object, "string"),
        (1, "float32"), (3, "string"), (7, "int64"),
    ],
)  # fmt: skip
def test_resolve_format(given, expected):
    assert resolve_format(given) == expected


@pytest.mark.parametrize("bad", ["uint8", np.float16, "complex64", 99, "foo"])
def test_resolve_format_rejects(bad):
    with pytest.raises(ValueError, match="unsupported channel format"):
        resolve_format(bad)


def test_segment_names():
    assert segment_name("eeg") == "dpshm_eeg"
    assert segment_name("dpshm_eeg") == "dpshm_eeg"
    assert segment_name("EEG-1.raw_2") == "dpshm_EEG-1.raw_2"
    for bad in ["", "a b", "a/b", "é", "x" * 300, None]:
        with pytest.raises(ValueError, match="ring name"):
            segment_name(bad)


def test_string_truncation_is_counted_at_char_boundary(make_ring, caplog):
    ring = make_ring(n_channels=1, capacity=4, dtype="string", string_width=5)
    with caplog.at_level("WARNING", logger="dpshm.shm.ring"):
        ring.write([["aéééé"], ["ok"], ["€€"]], [1, 2, 3])  # 9, 2 and 6 bytes
        ring.write([["€€€"]], [4])
        with pytest.raises(ValueError, match="timestamps"):
            ring.write([["too long for the slot"]], [1, 2])  # rejected: not counted
    assert ring.n_truncated == 3
    assert decode_strings(ring.window(4)[0]).ravel().tolist() == ["aéé", "ok", "€", "€"]
    assert sum("truncated" in r.getMessage() for r in caplog.records) == 1  # logged once
    with SharedRing.attach(ring.name) as att:
        assert att.n_truncated == 3 and att.string_width == 5


def test_write_larger_than_capacity_keeps_newest(make_ring):
    ring = make_ring(n_channels=1, capacity=5, dtype="int32")
    ring.write(np.arange(3, dtype=np.int32)[:, None], np.arange(3.0))
    ring.write(np.arange(3, 15, dtype=np.int32)[:, None], np.arange(3.0, 15.0))
    assert ring.head == 15
    np.testing.assert_array_equal(ring.window(5)[0].ravel(), np.arange(10, 15))
    np.testing.assert_array_equal(ring.window(5)[1], np.arange(10.0, 15.0))


@pytest.mark.parametrize("dtype", ["float32", "int16", "double64"])
def test_every_write_path_keeps_both_mirror_halves_exact(make_ring, dtype):
    """Fast path (C-contiguous rows of the ring dtype) and general path store the same."""
    cap, n_ch = 7, 3
    ring = make_ring(n_channels=n_ch, capacity=cap, dtype=dtype)
    rng = np.random.default_rng(7)
    model: list[np.ndarray] = []
    forms = ["c", "fortran", "strided", "list", "cast", "ts_strided", "ts_list"]
    for step in range(120):
        k = int(rng.integers(0, 2 * cap + 3))
        h = len(model)
        rows = ((np.arange(h, h + k)[:, None] * n_ch + np.arange(n_ch)) % 1000).astype(ring.dtype)
        ts = np.arange(h, h + k, dtype=np.float64) + 0.5
        form = forms[step % len(forms)]
        samples, times = rows, ts
        if form == "fortran":
            samples = np.asfortranarray(rows)
        elif form == "strided":
            samples = np.repeat(rows, 2, axis=1)[:, ::2]
        elif form == "list":
            samples = rows.tolist()
        elif form == "cast":
            samples = rows.astype(np.int8 if dtype == "int16" else np.float32)
            rows = samples.astype(ring.dtype)
        elif form == "ts_strided":
            times = np.repeat(ts, 2)[::2]
        elif form == "ts_list":
            times = ts.tolist()
        assert ring.write(samples, times) == h + k == ring.head == ring.pending
        model.extend(rows)
        for p in range(cap):  # both halves hold the newest sample congruent to p
            i = max((j for j in range(len(model)) if j % cap == p), default=None)
            want = np.zeros(n_ch, ring.dtype) if i is None else model[i]
            np.testing.assert_array_equal(ring._data[p], want)
            np.testing.assert_array_equal(ring._data[p + cap], want)
            assert ring._ts[p] == ring._ts[p + cap] == (0.0 if i is None else i + 0.5)


def test_write_shape_and_dtype_errors(make_ring):
    ring = make_ring(n_channels=3, capacity=4, dtype="int16")
    with pytest.raises(ValueError, match=r"shape \(k, 3\).*got shape \(2, 4\)"):
        ring.write(np.zeros((2, 4), np.int16), [1, 2])
    with pytest.raises(ValueError, match=r"shape \(k, 3\).*got shape \(3,\)"):
        ring.write(np.zeros(3, np.int16), [1])
    with pytest.raises(ValueError, match=r"int16.*float64"):
        ring.write(np.zeros((1, 3)), [1])
    with pytest.raises(ValueError, match=r"int16.*int32"):
        ring.write(np.zeros((1, 3), np.int32), [1])
    with pytest.raises(ValueError, match="int16"):
        ring.write([[1, 2, 70000]], [1])  # list that does not fit
    with pytest.raises(ValueError, match=r"expected 2 timestamps.*\(3,\)"):
        ring.write(np.zeros((2, 3), np.int16), [1, 2, 3])
    with pytest.raises(ValueError, match="timestamps"):
        ring.write(np.zeros((1, 3), np.int16), ["x"])
    assert ring.head == 0  # nothing was half-written
    ring.write([[1, 2, 3]], [1])  # list of ints that fit
    ring.write(np.ones((1, 3), np.int8), [2])  # safe cast
    assert ring.head == 2
    fring = make_ring(n_channels=1, capacity=4, dtype="float32")
    fring.write(np.array([[0.1]]), [1])  # float64 -> float32, documented
    fring.write(np.array([[7]], np.int16), [2])
    assert fring.window(2)[0].ravel().tolist() == [np.float32(0.1), 7.0]
    assert fring.write([], []) == 2  # empty chunk from pylsl


def test_create_argument_errors(make_ring, unique_name):
    for kwargs, msg in [
        ({"n_channels": 0}, "n_channels"),
        ({"capacity": -1}, "capacity"),
        ({"capacity": 2.5}, "capacity"),
        ({"srate": -1}, "srate"),
        ({"channel_names": ["a"]}, "channel_names"),
        ({"meta": {"x": object()}}, "JSON"),
        ({"dtype": "string", "string_width": 0}, "string_width"),
    ]:
        with pytest.raises(ValueError, match=msg):
            make_ring(name=unique_name, **kwargs)
        assert not _seg_exists(unique_name)
    ring = make_ring(name=unique_name)
    with pytest.raises(FileExistsError, match=f"ring '{unique_name}' already exists and is "):
        SharedRing.create(unique_name, 1, 4)  # names the ring, its live writer and the fix
    assert ring.head == 0


def test_missing_ring_names_it_and_lists_existing(make_ring, unique_name):
    other = make_ring()
    with pytest.raises(RingNotFoundError) as exc:
        SharedRing.attach(f"{unique_name}_missing")
    assert isinstance(exc.value, LookupError) and isinstance(exc.value, DpshmError)
    assert f"{unique_name}_missing" in str(exc.value) and other.name in str(exc.value)
    with pytest.raises(LookupError):
        SharedStreamView(f"{unique_name}_missing")


def test_foreign_segment_wrong_magic(unique_name):
    seg = segment_name(unique_name)
    fd = _posixshmem.shm_open("/" + seg, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"NOTARING" + b"\x01" * 1016)
        with pytest.raises(RingFormatError, match="not a dpshm ring"):
            SharedRing.attach(unique_name)
        assert unique_name not in list_rings()
        with pytest.raises(RingFormatError):
            unlink_ring(unique_name)
        with pytest.raises(FileExistsError, match=r"not a usable dpshm ring.*force=True"):
            SharedRing.create(unique_name, 1, 4)
        assert unlink_ring(unique_name, force=True)
    finally:
        os.close(fd)
        if _seg_exists(unique_name):
            _posixshmem.shm_unlink("/" + seg)


def test_segment_too_small_to_be_a_ring(unique_name):
    seg = segment_name(unique_name)
    fd = _posixshmem.shm_open("/" + seg, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"\x00" * 100)
        with pytest.raises(RingFormatError, match=r"\(100 bytes\) is too small.*force=True"):
            SharedRing.attach(unique_name)
    finally:
        os.close(fd)
        if _seg_exists(unique_name):
            _posixshmem.shm_unlink("/" + seg)


def test_wrong_layout_version(make_ring):
    ring = make_ring()
    path = f"/dev/shm/{segment_name(ring.name)}"
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 64) as mm:
        struct.pack_into("<I", mm, 8, 99)
    with pytest.raises(RingFormatError, match="version 99"):
        SharedRing.attach(ring.name)


def test_too_large_ring_names_size_and_fix(unique_name):
    with pytest.raises(RingSpaceError) as exc:
        SharedRing.create(unique_name, n_channels=100_000, capacity=10**9, dtype="float64")
    msg = str(exc.value)
    assert re.search(r"needs \d{13,} bytes", msg)
    assert "free" in msg and "--shm-size" in msg and unique_name in msg
    assert isinstance(exc.value, MemoryError)
    assert not _seg_exists(unique_name)


def test_close_is_idempotent_and_views_survive(make_ring):
    ring = make_ring(n_channels=2, capacity=4, dtype="float64")
    ring.write(np.ones((3, 2)), [1, 2, 3])
    att = SharedRing.attach(ring.name)
    view_att, _ = att.window(3)
    view_own, _ = ring.window(3)
    att.close()
    att.close()
    ring.unlink()
    ring.unlink()
    ring.close()
    ring.close()
    gc.collect()
    assert not _seg_exists(ring.name)
    assert view_att.sum() == 6.0 and view_own.sum() == 6.0  # still mapped, no crash
    assert ring.closed and att.closed
    with pytest.raises(ValueError, match="closed"):
        ring.write(np.ones((1, 2)), [1])
    uses = [lambda: ring.head, lambda: att.stale, lambda: att.window(1)]
    uses += [lambda: ring.window(1, 3), lambda: att.copy_range(0, 1), lambda: ring.time_offset]
    for use in uses:
        with pytest.raises(ValueError, match="closed"):
            use()
    del view_att, view_own
    gc.collect()


def test_unlink_ring_refuses_live_writer_and_removes_dead_ones(make_ring, unique_name):
    ring = make_ring()
    with pytest.raises(RingOwnershipError, match=str(os.getpid())):
        unlink_ring(ring.name)
    assert _seg_exists(ring.name)
    assert not unlink_ring(f"{unique_name}_none")
    assert unlink_ring(ring.name, force=True)
    assert not _seg_exists(ring.name)


def test_context_manager_owner_unlinks(unique_name):
    with SharedRing.create(unique_name, 1, 4) as ring:
        assert _seg_exists(unique_name)
        with SharedRing.attach(unique_name):
            pass
        assert _seg_exists(unique_name)  # attacher closing never unlinks
    assert not _seg_exists(unique_name) and ring.closed
