"""The trace stream of one page: the frames ``/api/trace`` pushes.

A :class:`TraceCursor` follows one window request on one ring. Its first
frame is the whole window (a ``reset`` frame, the layout of an
``/api/window`` reply, see :mod:`dpshm.viewer.columns`); every later frame only
the columns completed since the previous one, which the page appends. A frame
whose header has no ``reset`` carries just ``first_col``, ``end_col``,
``n_cols``, ``head`` and ``stale``, plus ``markers`` (those from the window's
oldest column on) when a marker stream changed. Nothing new (no column, no
marker, no change of ``stale``): no frame.

The per-frame path is what a page costs the viewer at every frame, so it is
short: the ring's head (nothing new: no frame), a header formatted from five
numbers, :func:`~dpshm.viewer.columns.decimated_frame` of the new columns (computed
on the ring's buffer, written straight into the frame's bytes).
The ring is re-checked against the registry every :data:`RECHECK_EVERY`
frames (a supervisor restart gives a new ring: a reset frame follows).
"""

from __future__ import annotations

import json
from typing import Any

from dpshm.viewer.columns import decimated_frame
from dpshm.viewer.data import StreamBook, WindowRequest

#: Frames between looks at the registry (a new ring after a supervisor restart).
RECHECK_EVERY = 5

_INCREMENT = '{"first_col":%d,"end_col":%d,"n_cols":%d,"head":%d,"stale":%s'


class TraceCursor:
    """The frames of one trace stream (not thread-safe: one per stream).

    Parameters
    ----------
    book : StreamBook
        The viewer's picture of the namespace.
    req : WindowRequest
        The page's window (``since`` is ignored).
    frame_s : float or None
        Seconds between frames, told to the page in the reset frame (``frame_s``):
        it scrolls the display at the stream's rate between frames.

    Raises
    ------
    ViewerError
        ``req`` is invalid for its stream (checked at once, and at each reset).
    """

    def __init__(self, book: StreamBook, req: WindowRequest, frame_s: float | None = None):
        self.book, self.req, self.frame_s = book, req, frame_s
        self._reset()

    def _reset(self) -> None:
        sh = self.book.shape(self.req)
        self.shape, self.ring = sh, sh.ring
        self.end: int | None = None  # next column to send (None: send the whole window)
        self._marks: tuple[int, ...] | None = None
        self._stale: bool | None = None
        self._frames = 0

    def frame(self) -> bytearray | None:
        """The next frame, or ``None`` when there is nothing new to send.

        Raises
        ------
        ViewerError
            The stream went away (the supervisor stopped): call again later; the
            next frame is then a reset frame on the new ring.
        """
        with self.book.lock:  # the book closes rings it drops: never while read here
            self._frames += 1
            recheck = self.ring.closed or self._frames % RECHECK_EVERY == 0
            if recheck and self.book.current(self.req.key) is not self.ring:
                self._reset()  # ViewerError while the stream is gone
            return self._frame()

    def _frame(self) -> bytearray | None:
        sh, ring = self.shape, self.ring
        spc, head = sh.spc, ring.head
        done = head // spc
        marks, stale = self.book.marker_heads(), ring.stale
        if done == self.end and marks == self._marks and stale == self._stale:
            return None  # nothing new: no frame
        self._stale = stale
        first = max(0, done - sh.n_cols)
        reset = self.end is None or self.end < first  # new, or a window behind
        if not reset:
            first = self.end  # type: ignore[assignment]
        self.end = done
        markers: list[dict[str, Any]] | None = None
        if marks != self._marks or reset:
            self._marks = marks
            markers = self.book.window_markers(sh, done)
        if reset:
            header: dict[str, Any] | str = sh.header(self.req.key)
            header.update(  # type: ignore[union-attr]
                first_col=first, end_col=done, n_cols=done - first, time_offset=ring.time_offset,
                head=head, stale=stale, reset=True, markers=markers,
                frame_s=self.frame_s,
            )  # fmt: skip
        else:
            text = _INCREMENT % (first, done, done - first, head, "true" if stale else "false")
            if markers is not None:
                text += ',"markers":' + json.dumps(markers, separators=(",", ":"))
            header = text + "}"
        return decimated_frame(header, ring, first, done, spc, sh.first_channel, sh.n_channels)
