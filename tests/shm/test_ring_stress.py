"""Loss accounting under overrun: a full-speed writer against reader processes.

The writer (this process) writes chunks of 1 to ``capacity`` rows into a
500-row ring as fast as it can; reader processes (spawn) attach with
``SharedStreamView`` and read it with one read path each. Sample ``j`` has the
timestamp ``j`` and the row :func:`_table` gives, so a reader can check every
call on its own: the rows it got are contiguous and intact, and every sample it
did not get is counted -- in the same call, right before the rows that follow
the gap (``lost``, the part of ``update()``'s count beyond ``samples``,
``skipped_samples`` of ``next_window``, ``cut_samples`` of window copies).
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest
from helpers import join_readers, kill_alive

from dpshm.shm.ring import SharedRing, unlink_ring
from dpshm.shm.view import SharedStreamView

CAP = 500
PERIOD = 1 << 16  # the row pattern repeats every PERIOD samples (exact in float32)
WRITE_S = 1.0  # how long the writer runs
READER_S = 60.0  # a reader gives up after this long (the test fails then)
CHANNELS = {"numeric": 8, "string": 2}

pytestmark = pytest.mark.slow


def _table(kind: str) -> np.ndarray:
    """Rows of samples ``0 .. PERIOD + CAP``: sample ``j`` is row ``j % PERIOD``."""
    n_ch = CHANNELS[kind]
    j = np.arange(PERIOD + CAP) % PERIOD
    if kind == "numeric":
        return (j[:, None] * n_ch + np.arange(n_ch)).astype(np.float32)
    return np.array([[f"{i}.{c}" for c in range(n_ch)] for i in j], dtype=object)


def _blank_row(kind: str) -> np.ndarray:
    """What a reader sees in a row never written (zeros, empty strings)."""
    return np.zeros(CHANNELS[kind], np.float32) if kind == "numeric" else np.full(2, "", object)


class _Check:
    """Per-reader bookkeeping: the first few violations and the totals."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.table = _table(kind)
        self.events: list[tuple] = []
        self.n_events = 0
        self.calls = 0
        self.got = 0  # samples returned
        self.counted = 0  # samples reported missing

    def fail(self, *what: object) -> None:
        self.n_events += 1
        if len(self.events) < 5:
            self.events.append(what)

    def rows(self, data: np.ndarray, ts: np.ndarray) -> bool:
        """True if ``ts`` is contiguous and every row is the one of its timestamp."""
        if len(ts) == 0:
            return True
        j = ts.astype(np.int64)
        if not np.array_equal(j, np.arange(j[0], j[0] + len(j))) or not np.array_equal(ts, j):
            self.fail("timestamps not contiguous", float(ts[0]), float(ts[-1]), len(ts))
            return False
        if data is not None and not np.array_equal(data, self.table[j % PERIOD]):
            self.fail("rows do not match their timestamps", int(j[0]), len(j))
            return False
        return True

    def unfolded(self, data: np.ndarray) -> None:
        """Check a data-only window (unfold_buffer): blank rows first, then contiguous
        samples."""
        blank = (data == _blank_row(self.kind)).all(axis=1)
        n_blank = int(np.argmin(blank)) if not blank.all() else len(data)
        if blank[n_blank:].any():
            self.fail("blank row after a sample")
            return
        if n_blank == len(data):
            return
        first = data[n_blank]
        hits = np.flatnonzero((self.table[:PERIOD] == first).all(axis=1))
        if len(hits) != 1:
            self.fail("unknown row", str(first))
            return
        j = (int(hits[0]) + np.arange(len(data) - n_blank)) % PERIOD
        if not np.array_equal(data[n_blank:], self.table[j]):
            self.fail("unfolded rows not contiguous", int(hits[0]), len(data) - n_blank)


def _read_new(sv: SharedStreamView, chk: _Check, state: dict) -> None:
    d, t, lost = sv.read_new()
    chk.calls += 1
    chk.got += len(t)
    chk.counted += lost
    if len(t):
        if chk.rows(d, t) and int(t[0]) != state["next"] + lost:
            chk.fail("uncounted gap", state["next"], lost, int(t[0]))
        state["next"] = int(t[-1]) + 1
    elif lost:
        chk.fail("loss reported without the rows after it", state["next"], lost)
        state["next"] += lost
    state["cursor"] = chk.got + chk.counted


def _update(sv: SharedStreamView, chk: _Check, state: dict) -> None:
    before = sv.n_new
    ret = sv.update()
    chk.calls += 1
    if sv.n_new - before != ret:
        chk.fail("n_new grew by another count than update() returned", ret, sv.n_new - before)
    if not ret:
        return
    d, t = sv.samples, sv.times
    chk.got += len(t)
    chk.counted += ret - len(t)
    if len(t) > ret:
        chk.fail("samples holds more rows than update() counted", ret, len(t))
    elif len(t):
        if chk.rows(d, t) and int(t[0]) != state["next"] + ret - len(t):
            chk.fail("uncounted gap", state["next"], ret - len(t), int(t[0]))
        state["next"] = int(t[-1]) + 1
    else:
        chk.fail("update() counted samples but samples holds none", ret)
        state["next"] += ret
    state["cursor"] = sv.n_new


def _cut(sv: SharedStreamView) -> int:
    return getattr(sv, "cut_samples", 0)  # the old code had no such counter


def _next_window(sv: SharedStreamView, chk: _Check, state: dict) -> None:
    n = int(state["rng"].integers(1, CAP + 1))
    n_new, skipped, cut = sv.n_new, sv.skipped_samples, _cut(sv)
    win = sv.next_window(n, timeout=0.05, copy=True)
    chk.calls += 1
    if win is None:
        return
    d, t = win
    cursor = state["cursor"] + sv.n_new - n_new  # the view's cursor: samples arrived
    d_skip, d_cut = sv.skipped_samples - skipped, _cut(sv) - cut
    if len(t) and chk.rows(d, t):
        if int(t[-1]) + 1 != cursor:
            chk.fail("window does not end at the newest sample", int(t[-1]), cursor)
        if d_skip != max(0, int(t[0]) - state["cursor"]):
            chk.fail("uncounted skip", state["cursor"], d_skip, int(t[0]))
        if len(t) + d_cut != min(n, cursor):
            chk.fail("window cut without counting", n, len(t), d_cut)
    elif not len(t) and d_skip != cursor - state["cursor"]:
        chk.fail("empty window, skip not counted", state["cursor"], d_skip, cursor)
    chk.got += min(len(t), cursor - state["cursor"])
    chk.counted += d_skip
    state["cursor"] = cursor


def _get_window(sv: SharedStreamView, chk: _Check, state: dict) -> None:
    n = int(state["rng"].integers(1, CAP + 1))
    cut, head = _cut(sv), sv.head
    d, t = sv.get_window(n, copy=True)
    chk.calls += 1
    d_cut = _cut(sv) - cut
    if len(t) and chk.rows(d, t) and len(t) + d_cut != min(n, int(t[-1]) + 1):
        chk.fail("window cut without counting", n, len(t), d_cut)
    elif not len(t) and not d_cut and head:  # head > 0 before the call: rows to return
        chk.fail("empty window, cut not counted", n, head)
    state["cursor"] = sv.head  # windows have no cursor: stop once drained


def _unfold(sv: SharedStreamView, chk: _Check, state: dict) -> None:
    cut = _cut(sv)
    d = sv.unfold_buffer()
    chk.calls += 1
    chk.unfolded(d)
    if len(d) + _cut(sv) - cut != CAP:
        chk.fail("unfold_buffer cut without counting", len(d), _cut(sv) - cut)
    t = sv.unfold_buffer_t()
    chk.rows(None, t[t > 0])  # blank rows have the timestamp 0 (and so has sample 0)
    state["cursor"] = sv.head


MODES = {
    "read_new": _read_new,
    "update": _update,
    "next_window": _next_window,
    "get_window": _get_window,
    "unfold_buffer": _unfold,
}


def _reader(name: str, kind: str, mode: str, seed: int, attached, results) -> None:
    chk = _Check(kind)
    step = MODES[mode]
    state = {"next": 0, "cursor": 0, "rng": np.random.default_rng(seed)}
    with SharedStreamView(name) as sv:
        attached.release()
        deadline = time.monotonic() + READER_S
        drained = False
        while time.monotonic() < deadline:
            done = sv.stale  # set by the writer after its last write
            step(sv, chk, state)
            if done and state["cursor"] == sv.head:
                drained = True
                break
        results.put(
            {
                "mode": mode,
                "events": chk.events,
                "n_events": chk.n_events,
                "calls": chk.calls,
                "got": chk.got,
                "counted": chk.counted,
                "lost_samples": sv.lost_samples,
                "head": sv.head,
                "drained": drained,
            }
        )


def _write(ring: SharedRing, kind: str, seconds: float, seed: int) -> int:
    """Write chunks of 1..CAP rows (and some of exactly CAP) for ``seconds``."""
    table = _table(kind)
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, CAP + 1, 4096)
    sizes[::7] = CAP  # a chunk of the whole capacity overwrites every row at once
    ts = np.arange(PERIOD + CAP, dtype=np.float64)
    head, i = 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(64):
            k = int(sizes[i % len(sizes)])
            i += 1
            p = head % PERIOD
            head = ring.write(table[p : p + k], ts[p : p + k] + (head - p))
    ring.set_stale(True)  # tells the readers the writer is done
    return head


def _run(name: str, kind: str, modes: list[str], seed: int = 0) -> tuple[int, list[dict]]:
    ctx = mp.get_context("spawn")
    attached, results = ctx.Semaphore(0), ctx.Queue()
    n_ch = CHANNELS[kind]
    ring = SharedRing.create(name, n_channels=n_ch, capacity=CAP, dtype=(
        "float32" if kind == "numeric" else "string"), string_width=16)  # fmt: skip
    procs = [
        ctx.Process(target=_reader, args=(name, kind, mode, seed + i, attached, results))
        for i, mode in enumerate(modes)
    ]
    try:
        for p in procs:
            p.start()
        for _p in procs:
            assert attached.acquire(timeout=60), "a reader did not attach within 60 s"
        head = _write(ring, kind, WRITE_S, seed)
        got = [results.get(timeout=READER_S + 30) for _ in procs]
        join_readers(procs)
    finally:
        kill_alive(procs)
        ring.close()
        unlink_ring(name, force=True)
    return head, got


def _summary(got: list[dict]) -> str:
    return "; ".join(
        f"{g['mode']}: {g['n_events']} events {g['events']} in {g['calls']} calls" for g in got
    )


@pytest.mark.parametrize("n_readers", [1, 2, 4])
@pytest.mark.parametrize("kind", ["numeric", "string"])
def test_read_new_counts_every_sample(unique_name, kind, n_readers):
    head, got = _run(unique_name, kind, ["read_new"] * n_readers, seed=n_readers)
    assert all(g["drained"] for g in got), got
    assert not any(g["n_events"] for g in got), _summary(got)
    for g in got:
        assert g["head"] == head
        assert g["got"] + g["counted"] == head, g  # nothing vanished over the whole run
        assert g["counted"] == g["lost_samples"]
        assert g["got"] > 0 and g["calls"] > 1
    assert sum(g["counted"] for g in got) > 0, "the writer never overran a reader"


@pytest.mark.parametrize("kind", ["numeric", "string"])
def test_every_read_path_counts_what_it_misses(unique_name, kind):
    modes = ["update", "next_window", "get_window", "unfold_buffer"]
    head, got = _run(unique_name, kind, modes, seed=11)
    assert all(g["drained"] for g in got), got
    assert not any(g["n_events"] for g in got), _summary(got)
    by_mode = {g["mode"]: g for g in got}
    for mode in ("update", "next_window"):
        assert by_mode[mode]["got"] + by_mode[mode]["counted"] == head, by_mode[mode]
    assert all(g["calls"] > 1 for g in got)
