"""RingBuffer against a plain reference model and the original dareplane-utils one."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers import import_original
from hypothesis import given, settings
from hypothesis import strategies as st

from dpshm.dareplane.ringbuffer import RingBuffer


class ListModel:
    """Reference: keep every sample ever added in a list; the ring is its tail."""

    def __init__(self, capacity: int, sample_shape: tuple[int, ...]) -> None:
        self.capacity = capacity
        self.rows: list[np.ndarray] = []
        self.times: list[float] = []
        self.sample_shape = sample_shape

    def add(self, rows: np.ndarray, times: np.ndarray) -> None:
        self.rows.extend(rows)
        self.times.extend(times)

    def unfold(self) -> np.ndarray:
        pad = max(0, self.capacity - len(self.rows))
        zeros = [np.zeros(self.sample_shape, np.float32)] * pad
        return np.array(zeros + self.rows[-self.capacity :], dtype=np.float32).reshape(
            (self.capacity, *self.sample_shape)
        )

    def unfold_t(self) -> np.ndarray:
        pad = max(0, self.capacity - len(self.times))
        return np.array([0.0] * pad + self.times[-self.capacity :])


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 12),
    sample_shape=st.sampled_from([(), (1,), (3,), (2, 3)]),
    chunks=st.lists(st.integers(0, 30), max_size=12),
)
def test_matches_reference_model(capacity, sample_shape, chunks):
    rb = RingBuffer((capacity, *sample_shape))
    model = ListModel(capacity, sample_shape)
    counter = 0
    for k in chunks:
        rows = (np.arange(counter, counter + k, dtype=np.float32)[:, None] + 0.5) * np.ones(
            (1, int(np.prod(sample_shape, dtype=int)) or 1), np.float32
        )
        rows = rows.reshape((k, *sample_shape))
        times = np.arange(counter, counter + k, dtype=np.float64) + 1.0
        rb.add_samples(rows, times)
        model.add(list(rows), list(times))
        counter += k
        np.testing.assert_array_equal(rb.unfold_buffer(), model.unfold())
        np.testing.assert_array_equal(rb.unfold_buffer_t(), model.unfold_t())
        assert rb.curr_i == counter % capacity
        assert rb.head == counter
        assert len(rb) == min(counter, capacity)
        if counter:
            assert rb.last_t == model.times[-1]
    assert rb.n_dropped == sum(max(0, k - capacity) for k in chunks)


@settings(max_examples=40, deadline=None)
@given(capacity=st.integers(1, 10), chunks=st.lists(st.integers(1, 25), max_size=10))
def test_storage_order_matches_original(capacity, chunks):
    """buffer / buffer_t / curr_i have the original's storage-order semantics.

    Exception by design: after a chunk larger than the buffer the original
    advances ``curr_i`` by the capacity, we by the chunk length (sample ``i``
    always lives at row ``i % capacity``); the chronological order is the same.
    """
    Original = import_original("dareplane_utils.general.ringbuffer").RingBuffer

    ours, orig = RingBuffer((capacity, 2)), Original((capacity, 2))
    orig.logger = logging.Logger("silent", level=logging.CRITICAL)
    counter = 0
    for k in chunks:
        rows = np.arange(counter * 2, (counter + k) * 2, dtype=np.float32).reshape(k, 2)
        times = np.arange(counter, counter + k, dtype=np.float64)
        ours.add_samples(rows, times)
        orig.add_samples(rows, times)
        counter += k
        np.testing.assert_array_equal(ours.unfold_buffer(), orig.unfold_buffer())
        np.testing.assert_array_equal(ours.unfold_buffer_t(), orig.unfold_buffer_t())
        # buffer[curr_i] is the oldest sample in both
        np.testing.assert_array_equal(ours.buffer[ours.curr_i], orig.buffer[orig.curr_i])
        assert ours.last_t == orig.last_t
        if all(c <= capacity for c in chunks):
            np.testing.assert_array_equal(ours.buffer, orig.buffer)
            np.testing.assert_array_equal(ours.buffer_t, orig.buffer_t)
            assert ours.curr_i == orig.curr_i


def test_docstring_example_of_original():
    rb = RingBuffer(shape=(10, 3), dtype=np.float32)
    rb.add_samples([np.full(3, i) for i in range(5)], list(range(5)))
    np.testing.assert_array_equal(rb.buffer_t, [0, 1, 2, 3, 4, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(rb.unfold_buffer_t(), [0, 0, 0, 0, 0, 0, 1, 2, 3, 4])
    rb.add_samples([np.full(3, i) for i in range(8)], list(range(8)))
    np.testing.assert_array_equal(rb.buffer_t, [5, 6, 7, 3, 4, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(rb.unfold_buffer_t(), [3, 4, 0, 1, 2, 3, 4, 5, 6, 7])
    assert rb.curr_i == 3


def test_unfold_is_a_copy_and_view_is_not():
    rb = RingBuffer((4, 1))
    rb.add_samples(np.arange(6, dtype=np.float32).reshape(6, 1), np.arange(6.0))
    copy = rb.unfold_buffer()
    view = rb.view(2)
    assert np.shares_memory(view, rb._data)
    assert not np.shares_memory(copy, rb._data)
    np.testing.assert_array_equal(view[:, 0], [4, 5])
    rb.add_samples(np.array([[9.0]], np.float32), [9.0])
    np.testing.assert_array_equal(copy[:, 0], [2, 3, 4, 5])
    np.testing.assert_array_equal(rb.view(2)[:, 0], [5, 9])


def test_empty_add_is_silent_noop(caplog):
    rb = RingBuffer((4, 2))
    with caplog.at_level(logging.DEBUG):
        rb.add_samples([], [])
        rb.add_samples(np.zeros((0, 2)), np.zeros(0))
    assert caplog.records == []
    assert rb.head == 0 and rb.curr_i == 0


def test_string_samples():
    rb = RingBuffer((3, 1), dtype=object)
    np.testing.assert_array_equal(rb.unfold_buffer()[:, 0], ["", "", ""])
    rb.add_samples([["a"], ["b"]], [1.0, 2.0])
    rb.add_samples([["c"], ["dé"]], [3.0, 4.0])
    assert list(rb.unfold_buffer()[:, 0]) == ["b", "c", "dé"]
    assert rb.last_t == 4.0


@pytest.mark.parametrize("shape", [(0, 2), (), (3, -1)])
def test_invalid_shape(shape):
    with pytest.raises(ValueError, match="n_samples"):
        RingBuffer(shape)


def test_chunk_of_wrong_sample_shape_names_both_shapes():
    rb = RingBuffer((4, 2))
    with pytest.raises(ValueError, match=r"shape \(2,\); got a chunk of shape \(3, 3\)"):
        rb.add_samples(np.zeros((3, 3)), [1.0, 2.0, 3.0])
    assert rb.head == 0
    one = RingBuffer((4, 1))
    one.add_samples(np.arange(3.0), [1.0, 2.0, 3.0])  # (k,) into one channel still works
    np.testing.assert_array_equal(one.unfold_buffer()[:, 0], [0.0, 0.0, 1.0, 2.0])


def test_length_mismatch():
    rb = RingBuffer((4, 2))
    with pytest.raises(ValueError, match="3 samples but 2 timestamps"):
        rb.add_samples(np.zeros((3, 2)), [1.0, 2.0])


def test_reassigning_buffer_clears_as_in_the_original():
    """dp-cortec-bic's CTListener.reset_buffers: whole-array assignment to clear."""
    orig_rb = import_original("dareplane_utils.general.ringbuffer").RingBuffer((50, 4))
    ours = RingBuffer((50, 4))
    rng = np.random.default_rng(1)
    for rb in (ours, orig_rb):
        rb.add_samples(rng.standard_normal((40, 4)).astype(np.float32), np.arange(40.0))
    for rb in (ours, orig_rb):
        rb.buffer = np.zeros(rb.buffer.shape)  # float64 zeros, as cortec-bic writes
        rb.buffer_t = np.zeros(rb.buffer.shape[0])
    np.testing.assert_array_equal(ours.unfold_buffer(), orig_rb.unfold_buffer())
    assert ours.buffer.dtype == orig_rb.buffer.dtype == np.float64
    new = rng.standard_normal((7, 4))
    for rb in (ours, orig_rb):
        rb.add_samples(new, np.arange(100.0, 107.0))
    np.testing.assert_array_equal(ours.unfold_buffer(), orig_rb.unfold_buffer())
    np.testing.assert_array_equal(ours.unfold_buffer_t(), orig_rb.unfold_buffer_t())
    assert ours.curr_i == orig_rb.curr_i


def test_buffer_fails_loudly_where_it_cannot_work():
    rb = RingBuffer((10, 2))
    with pytest.raises(ValueError, match="read-only"):
        rb.buffer[0] = 1.0  # would miss the mirror copy the windows are read from
    with pytest.raises(ValueError, match=r"must keep its shape \(10, 2\)"):
        rb.buffer = np.zeros((20, 2))
    with pytest.raises(ValueError, match=r"buffer_t must keep its shape \(10,\)"):
        rb.buffer_t = np.zeros(3)
