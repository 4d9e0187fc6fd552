"""In-process numpy ring buffer for samples and timestamps.

Drop-in for dareplane-utils' ``RingBuffer`` (same attributes and methods), built
on the mirrored layout of :mod:`dpshm._mirror` that the shared-memory ring uses
too: the data live in ``2 * capacity`` rows, every sample written twice, so the
chronological window is always one contiguous view. ``buffer`` is the first
half, so ``buffer[i]`` and ``curr_i`` mean exactly what they meant in the
original (``buffer[curr_i]`` is the oldest sample, the next to be overwritten).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dpshm._logging import library_logger
from dpshm._mirror import mirror_halves, mirrored_window, mirrored_write

logger = library_logger(__name__)

__all__ = ["RingBuffer"]


class RingBuffer:
    """A fixed-size FIFO of samples and their timestamps.

    Parameters
    ----------
    shape : tuple of int
        ``(n_samples, ...)``: the capacity first, then the shape of one sample
        (usually ``(n_channels,)``; further dimensions are allowed).
    dtype : numpy dtype, optional
        Sample dtype, ``np.float32`` by default; ``object`` holds strings.

    Attributes
    ----------
    buffer : np.ndarray
        ``(n_samples, ...)`` read-only view of the data in storage order (sample
        ``i`` at row ``i % n_samples``). Use :meth:`unfold_buffer` for
        chronological order. Assign a whole array to replace the contents
        (e.g. to clear it), as with the original.
    buffer_t : np.ndarray
        ``(n_samples,)`` float64 timestamps in storage order (same rules).
    curr_i : int
        Row the next sample goes to (= the oldest sample once the buffer is full).
    last_t : float
        Timestamp of the newest sample (0 before the first add).
    head : int
        Samples ever added (including those already overwritten).
    n_dropped : int
        Samples discarded on arrival because one chunk was larger than the buffer.

    Examples
    --------
    >>> rb = RingBuffer((4, 2))
    >>> rb.add_samples(np.ones((3, 2)), [1.0, 2.0, 3.0])
    >>> rb.unfold_buffer_t()
    array([0., 1., 2., 3.])
    """

    def __init__(self, shape: Sequence[int] | int, dtype: Any = np.float32) -> None:
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        if len(shape) == 0 or shape[0] < 1 or any(s < 0 for s in shape[1:]):
            raise ValueError(
                f"RingBuffer shape {shape!r} is invalid; give (n_samples, n_channels, ...) "
                "with n_samples >= 1"
            )
        capacity = shape[0]
        self._data = np.zeros((2 * capacity, *shape[1:]), dtype=dtype)
        self._t = np.zeros(2 * capacity, dtype=np.float64)
        if self._data.dtype.kind == "O":
            self._data.fill("")  # not None, so string consumers see str
        self._data_h, self._t_h = mirror_halves(self._data), mirror_halves(self._t)
        self.capacity = capacity
        self._views()
        self.head = 0
        self.last_t: float = 0
        self.n_dropped = 0
        self.logger = logger

    @property
    def buffer(self) -> np.ndarray:
        """``(n_samples, ...)`` data in storage order (sample ``i`` at row ``i % n_samples``).

        Read-only: an in-place write would miss the mirror copy the windows are
        read from. Assigning a whole array of the same shape works as in the
        original (``rb.buffer = np.zeros(rb.buffer.shape)`` clears it; another
        dtype becomes the buffer's dtype); another shape is a ``ValueError``.
        """
        return self._buffer_view

    def _views(self) -> None:
        """The read-only first halves handed out as ``buffer`` and ``buffer_t``."""
        self._buffer_view = self._data[: self.capacity]
        self._buffer_view.flags.writeable = False
        self._buffer_t_view = self._t[: self.capacity]
        self._buffer_t_view.flags.writeable = False

    @buffer.setter
    def buffer(self, value: Any) -> None:
        arr = np.asarray(value)
        want = (self.capacity, *self._data.shape[1:])
        if arr.shape != want:
            raise ValueError(
                f"RingBuffer.buffer must keep its shape {want}; got an array of shape "
                f"{arr.shape}. Create a new RingBuffer for another size"
            )
        if arr.dtype != self._data.dtype:  # the original took the new array's dtype
            self._data = np.empty((2 * self.capacity, *want[1:]), dtype=arr.dtype)
            self._data_h = mirror_halves(self._data)
            self._views()
        self._data_h[:] = arr  # both halves: every window reads the new contents

    @property
    def buffer_t(self) -> np.ndarray:
        """``(n_samples,)`` float64 timestamps in storage order (read-only.

        Assignable as a whole like :attr:`buffer`).
        """
        return self._buffer_t_view

    @buffer_t.setter
    def buffer_t(self, value: Any) -> None:
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != (self.capacity,):
            raise ValueError(
                f"RingBuffer.buffer_t must keep its shape ({self.capacity},); got an array "
                f"of shape {arr.shape}. Create a new RingBuffer for another size"
            )
        self._t_h[:] = arr

    @property
    def curr_i(self) -> int:
        """Row where the next sample is written (always current)."""
        return self.head % self.capacity

    def add_samples(self, samples: Any, times: Any) -> None:
        """Append samples (oldest first) and their timestamps.

        Parameters
        ----------
        samples : array-like
            ``(k, ...)`` samples matching the buffer's sample shape; ``k`` may
            exceed the capacity (only the newest rows are kept, ``n_dropped``
            counts the rest). An empty chunk is a no-op.
        times : array-like
            ``k`` timestamps.
        """
        k = len(times)
        if k == 0 or len(samples) == 0:
            return
        if len(samples) != k:
            raise ValueError(
                f"{len(samples)} samples but {k} timestamps; give one timestamp per sample"
            )
        rows = samples
        if not isinstance(rows, np.ndarray):
            rows = np.asarray(samples, dtype=self._data.dtype)
        sample_shape = self._data.shape[1:]
        if rows.shape[1:] != sample_shape:
            if rows.size != k * int(np.prod(sample_shape)):
                raise ValueError(
                    f"RingBuffer holds samples of shape {sample_shape}; got a chunk of shape "
                    f"{rows.shape}: pass ({k}, {', '.join(map(str, sample_shape))})"
                )
            rows = rows.reshape((k, *sample_shape))  # e.g. (k,) into a 1-channel buffer
        if k > self.capacity:
            self.n_dropped += k - self.capacity
            self.logger.debug(
                "chunk of %d samples exceeds the buffer (%d); keeping the newest",
                k,
                self.capacity,
            )
        if not (isinstance(times, np.ndarray) and times.dtype == np.float64):
            times = np.asarray(times, dtype=np.float64)
        self.head = mirrored_write(self._data_h, self.head, rows, self._t_h, times)
        self.last_t = times[-1]

    def view(self, n: int | None = None) -> np.ndarray:
        """Zero-copy view of the newest ``n`` samples (all by default), oldest first.

        The view changes with later adds; copy it to keep it.
        """
        return mirrored_window(self._data, self.head, self.capacity if n is None else n)

    def view_t(self, n: int | None = None) -> np.ndarray:
        """Zero-copy view of the newest ``n`` timestamps, oldest first."""
        return mirrored_window(self._t, self.head, self.capacity if n is None else n)

    def unfold_buffer(self) -> np.ndarray:
        """Copy of the whole buffer in chronological order (newest sample last).

        Rows never written yet come first and hold zeros (``""`` for strings).
        """
        return self.view().copy()

    def unfold_buffer_t(self) -> np.ndarray:
        """Copy of the timestamps in chronological order (newest last)."""
        return self.view_t().copy()

    def __len__(self) -> int:
        """Number of valid samples currently held (``min(head, capacity)``)."""
        return min(self.head, self.capacity)

    def __repr__(self) -> str:
        return (
            f"<RingBuffer shape={self.buffer.shape} dtype={self.buffer.dtype} "
            f"head={self.head} curr_i={self.curr_i}>"
        )
