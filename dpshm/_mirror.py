"""Mirrored ring arithmetic shared by :class:`~dpshm.ring.SharedRing` and
:class:`~dpshm.ringbuffer.RingBuffer`.

A ring of ``capacity`` rows is stored in an array of ``2 * capacity`` rows.
Absolute sample ``i`` (``0 <= i < head``) lives at position ``p = i % capacity``
*and* at ``p + capacity``. Hence the newest ``n <= capacity`` samples always
occupy the contiguous positions ``[(head - n) % capacity, (head - n) % capacity + n)``:
every window is one numpy view, and a chronological copy is one memcpy.

Writing row ``i`` only touches positions holding samples congruent to ``i``
modulo ``capacity``, so a window ``[a, b)`` is intact as long as no sample with
index ``>= a + capacity`` has started to be written.

These helpers only do index arithmetic and slice assignment; they know nothing
of shared memory, LSL or ZeroMQ. The caller owns ``head``.
"""

from __future__ import annotations

import numpy as np


def mirrored_write(buf: np.ndarray, head: int, rows: np.ndarray) -> int:
    """Write ``rows`` as samples ``head, head + 1, ...`` into the mirrored ``buf``.

    Parameters
    ----------
    buf : np.ndarray
        Backing array of shape ``(2 * capacity, ...)``.
    head : int
        Number of samples written before this call.
    rows : np.ndarray
        Array of shape ``(k, ...)``; ``k`` may exceed ``capacity`` (only the
        newest ``capacity`` rows are stored).

    Returns
    -------
    int
        The new head, ``head + k``. The caller publishes it after this returns.
    """
    capacity = buf.shape[0] // 2
    k = len(rows)
    if k == 0:
        return head
    if k > capacity:
        rows = rows[k - capacity :]
    n = len(rows)
    start = (head + k - n) % capacity
    end = start + n  # < 2 * capacity
    # Primary span [start, end) in the doubled array, then its mirror image.
    buf[start:end] = rows
    split = min(end, capacity) - start  # rows that landed in the first half
    if split > 0:
        buf[start + capacity : start + capacity + split] = rows[:split]
    if split < n:
        buf[0 : n - split] = rows[split:]
    return head + k


def window_start(head: int, n: int, capacity: int) -> int:
    """Position in the doubled array where the newest ``n`` samples begin."""
    return (head - n) % capacity


def mirrored_window(buf: np.ndarray, head: int, n: int) -> np.ndarray:
    """Return a view of the newest ``n`` samples (oldest first, newest last).

    ``n`` must be ``<= capacity``. When fewer than ``n`` samples were ever
    written the view starts with the initial (unwritten) contents.
    """
    capacity = buf.shape[0] // 2
    if not 0 <= n <= capacity:
        raise ValueError(f"window of {n} samples does not fit a ring of capacity {capacity}")
    start = window_start(head, n, capacity)
    return buf[start : start + n]
