"""Stateful property test: SharedRing + SharedStreamView against a plain-list model."""

from __future__ import annotations

import uuid

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dpshm.formats import FORMATS, decode_strings
from dpshm.shm.ring import SharedRing
from dpshm.shm.view import SharedStreamView


def _model_string(s: str, width: int) -> str:
    """Reference truncation: the longest prefix of whole characters within ``width`` bytes."""
    return s.encode("utf-8")[:width].decode("utf-8", "ignore")


class RingMachine(RuleBasedStateMachine):
    ring: SharedRing | None = None
    view: SharedStreamView | None = None

    @initialize(
        fmt=st.sampled_from(sorted(FORMATS)),
        capacity=st.integers(1, 12),
        n_ch=st.integers(1, 3),
        width=st.integers(1, 7),
    )
    def setup(self, fmt, capacity, n_ch, width):
        name = f"hyp{uuid.uuid4().hex[:12]}"
        self.ring = SharedRing.create(name, n_ch, capacity, fmt, srate=100.0, string_width=width)
        self.view = SharedStreamView(name)
        self.fmt, self.cap, self.n_ch, self.width = fmt, capacity, n_ch, width
        self.strings = fmt == "string"
        self.model: list[list] = []  # expected rows, as readers should see them
        self.cursor = 0

    def _expected(self, rows: list[list]) -> np.ndarray:
        if self.strings:
            out = np.empty((len(rows), self.n_ch), dtype=object)
            out[:] = rows if rows else out
            return out
        return np.array(rows, dtype=self.ring.dtype).reshape(len(rows), self.n_ch)

    def _padded(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.model[-n:] if n else []
        fill = "" if self.strings else 0
        pad = n - len(rows)
        ts = [0.0] * pad + [float(i) for i in range(len(self.model) - len(rows), len(self.model))]
        return self._expected([[fill] * self.n_ch] * pad + rows), np.array(ts)

    def _ts(self, start: int, stop: int) -> np.ndarray:
        return np.arange(start, stop, dtype=np.float64)

    @rule(k=st.integers(0, 30))
    def write(self, k):
        h = len(self.model)
        idx = np.arange(h, h + k)
        raw = (idx[:, None] * self.n_ch + np.arange(self.n_ch)) % 100 - 50
        if self.strings:
            given = [[("é" * (int(v) % 4)) + str(int(v)) for v in row] for row in raw]
            self.model += [[_model_string(s, self.width) for s in row] for row in given]
            self.ring.write(given, idx.astype(float))
        else:
            self.model += raw.tolist()
            self.ring.write(raw.astype(self.ring.dtype), idx.astype(float))

    @rule(n=st.integers(0, 12), copy=st.booleans())
    def get_window(self, n, copy):
        n = min(n, self.cap)
        d, t = self.view.get_window(n, copy=copy)
        m = min(n, len(self.model))
        assert copy or not d.flags.writeable
        if self.strings and not copy:
            assert d.dtype.kind == "S"
            d = decode_strings(d)
        assert d.shape == (m, self.n_ch)
        np.testing.assert_array_equal(d, self._expected(self.model[len(self.model) - m :]))
        np.testing.assert_array_equal(t, self._ts(len(self.model) - m, len(self.model)))

    @rule()
    def read_new(self):
        d, t, lost = self.view.read_new()
        h = len(self.model)
        start = max(self.cursor, h - self.cap)
        assert lost == start - self.cursor
        np.testing.assert_array_equal(d, self._expected(self.model[start:h]))
        np.testing.assert_array_equal(t, self._ts(start, h))
        self.cursor = h

    @rule()
    def unfold(self):
        d, t = self._padded(self.cap)
        np.testing.assert_array_equal(self.view.unfold_buffer(), d)
        np.testing.assert_array_equal(self.view.unfold_buffer_t(), t)

    @precondition(lambda self: self.ring is not None)
    @invariant()
    def counters(self):
        h = len(self.model)
        assert self.view.head == h == self.ring.head == self.ring.pending
        assert self.view.curr_i == h % self.cap
        assert self.view.lost_samples <= h
        assert self.view.latest_timestamp == (float(h - 1) if h else None)
        # the storage order of `buffer` is StreamWatcher's: sample i at row i % capacity
        for i in range(max(0, h - self.cap), h):
            row = self.view.buffer[i % self.cap]
            got = decode_strings(row) if self.strings else row
            np.testing.assert_array_equal(got, self._expected([self.model[i]])[0])
            assert self.view.buffer_t[i % self.cap] == float(i)

    def teardown(self):
        if self.view is not None:
            self.view.close()
        if self.ring is not None:
            self.ring.unlink()
            self.ring.close()


RingMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRingMachine = RingMachine.TestCase
