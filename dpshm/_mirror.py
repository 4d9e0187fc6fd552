"""Mirrored ring arithmetic.

Shared by :class:`~dpshm.shm.ring.SharedRing` and
:class:`~dpshm.dareplane.ringbuffer.RingBuffer`.

A ring of ``capacity`` rows is stored in an array of ``2 * capacity`` rows.
Absolute sample ``i`` (``0 <= i < head``) lives at position ``p = i % capacity``
*and* at ``p + capacity``. Hence the newest ``n <= capacity`` samples always
occupy the contiguous positions ``[(head - n) % capacity, (head - n) % capacity + n)``:
every window is one numpy view, and a chronological copy is one memcpy.

Writing row ``i`` only touches positions holding samples congruent to ``i``
modulo ``capacity``, so a window ``[a, b)`` is intact as long as no sample with
index ``>= a + capacity`` has started to be written.

Writers address the same array as ``(2, capacity, ...)`` (:func:`mirror_halves`,
computed once): both copies of position ``p`` are ``halves[:, p]``, so a chunk
that does not wrap is stored, row and mirror, by one broadcasting slice
assignment. The fixed cost of a numpy slice assignment, not the bytes, is what
a small (10 ms) chunk costs.

These helpers only do index arithmetic and slice assignment; they know nothing
of shared memory, LSL or ZeroMQ. The caller owns ``head``.
"""

from __future__ import annotations

import numpy as np


def mirror_halves(buf: np.ndarray) -> np.ndarray:
    """View ``buf`` of shape ``(2 * capacity, ...)`` as ``(2, capacity, ...)``.

    Splitting the first axis is always possible without a copy, so writes to
    the result land in ``buf``. Compute it once per buffer and pass it to
    :func:`mirrored_write`.

    Raises
    ------
    ValueError
        ``buf`` has an odd number of rows.
    """
    rows = buf.shape[0]
    if rows % 2:
        raise ValueError(f"a mirrored buffer has 2 * capacity rows; got {rows}")
    return buf.reshape(2, rows // 2, *buf.shape[1:])


def mirrored_write(
    halves: np.ndarray,
    head: int,
    rows: np.ndarray,
    times_halves: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> int:
    """Write ``rows`` as samples ``head, head + 1, ...`` into both halves.

    Parameters
    ----------
    halves : np.ndarray
        :func:`mirror_halves` of the backing array, shape ``(2, capacity, ...)``.
    head : int
        Number of samples written before this call.
    rows : np.ndarray
        Array of shape ``(k, ...)``; ``k`` may exceed ``capacity`` (only the
        newest ``capacity`` rows are stored). The caller checks the shape:
        numpy broadcasting would accept e.g. a single row.
    times_halves, times : np.ndarray, optional
        A second mirrored array of the same capacity (the timestamps) and its
        ``k`` rows, stored at the same positions; one call for both saves the
        per-call cost that dominates small chunks.

    Returns
    -------
    int
        The new head, ``head + k``. The caller publishes it after this returns.
    """
    capacity = halves.shape[1]
    k = len(rows)
    if k > capacity:
        rows = rows[k - capacity :]
        if times is not None:
            times = times[k - capacity :]
        n = capacity
    else:
        n = k
    start = (head + k - n) % capacity
    end = start + n
    if end <= capacity:  # the common case: one broadcasting copy (row + mirror)
        halves[:, start:end] = rows
        if times_halves is not None:
            times_halves[:, start:end] = times
    else:  # wraps: the tail of the positions, then their start
        split = capacity - start
        halves[:, start:] = rows[:split]
        halves[:, : n - split] = rows[split:]
        if times_halves is not None:
            times_halves[:, start:] = times[:split]  # type: ignore[index]
            times_halves[:, : n - split] = times[split:]  # type: ignore[index]
    return head + k


def mirrored_start(capacity: int, head: int, n: int) -> int:
    """Position where the newest ``n <= capacity`` samples begin (see the module notes).

    Raises
    ------
    ValueError
        ``n`` is negative or exceeds ``capacity``.
    """
    if not 0 <= n <= capacity:
        raise ValueError(f"window of {n} samples does not fit a ring of capacity {capacity}")
    return (head - n) % capacity


def mirrored_window(buf: np.ndarray, head: int, n: int) -> np.ndarray:
    """Return a view of the newest ``n`` samples (oldest first, newest last).

    ``buf`` is the backing array of shape ``(2 * capacity, ...)``. ``n`` must
    be ``<= capacity``. When fewer than ``n`` samples were ever written the
    view starts with the initial (unwritten) contents.
    """
    start = mirrored_start(buf.shape[0] // 2, head, n)
    return buf[start : start + n]
