"""Min/max decimation per pixel column, and the bytes of a window reply or trace frame.

A trace of ``seconds`` at ``srate`` drawn ``width`` pixels wide gets
``spc = ceil(seconds * srate / width)`` samples per column. Columns are aligned
to the ring's absolute sample index (column ``c`` holds samples
``[c * spc, (c + 1) * spc)``), so a column never changes once complete: a
page holding the columns before ``since`` asks only for the new ones, and
:func:`decimate` computes just those, vectorised, on zero-copy views of the
ring (no cache, no copy of the samples).

Window reply (``application/octet-stream``, little-endian)::

    u32        n = length of the JSON header in bytes
    n bytes    JSON header (UTF-8), space-padded so the next field starts at a
               multiple of 8
    f64[k]     time of each column's last sample (LSL clock of the outlet plus
               its time_offset, i.e. this host's LSL clock)
    f32[k,m,2] per column, per channel: (min, max); NaN where samples were lost

with ``k = header["n_cols"]`` and ``m = header["n_channels"]``. A reply with
``"reset": true`` carries the whole window and its shape (``ring``, ``spc``,
``window_cols``, ``channel_names``, ...). The frames of a trace stream
(:mod:`dpshm.viewer.trace`) after the first carry only ``first_col``,
``end_col``, ``n_cols``, ``head`` and ``stale`` (and ``markers`` when they
changed): ``m`` is the reset frame's.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from dpshm.shm.ring import SharedRing


def decimate(
    ring: SharedRing,
    c0: int,
    c1: int,
    spc: int,
    ch0: int,
    nch: int,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Min/max of columns ``[c0, c1)`` of channels ``[ch0, ch0 + nch)``, from the ring itself.

    Column ``c`` holds samples ``[c * spc, (c + 1) * spc)``; ``c1 * spc`` must not
    exceed the ring's head. Computed on zero-copy views of the ring's (mirrored,
    contiguous) buffer, vectorised, without copying the samples; columns the
    writer overwrote before or while they were read are NaN (the ring's
    ``pending`` is read after the reduction, as :meth:`SharedRing.read
    <dpshm.shm.ring.SharedRing.read>` does), never wrong values.

    Returns
    -------
    times : np.ndarray, shape (k,)
        LSL time (without the ring's ``time_offset``) of each column's last sample.
    minmax : np.ndarray, shape (k, nch, 2), float32
        Per column and channel: (min, max).

    ``out``: the two arrays to fill (e.g. views of a frame's bytes, see
    :func:`decimated_frame`) instead of new ones.
    """
    k = max(0, c1 - c0)
    if out is None:
        out = np.empty(k), np.empty((k, nch, 2), np.float32)
    times, mm = out
    cap = ring.capacity
    lo = max(c0, -(-(ring.pending - cap) // spc))  # first column whose samples are all there
    if lo > c0:
        mm[: lo - c0] = np.nan
        times[: lo - c0] = np.nan
    if lo < c1:
        d, t = ring.window((c1 - lo) * spc, c1 * spc)
        block = d[:, ch0 : ch0 + nch].reshape(c1 - lo, spc, nch)
        j = lo - c0
        np.minimum.reduce(block, axis=1, out=mm[j:, :, 0])
        np.maximum.reduce(block, axis=1, out=mm[j:, :, 1])
        times[j:] = t[spc - 1 :: spc]
        gone = -(-(ring.pending - cap) // spc)  # overwritten while reduced: not to be trusted
        if gone > lo:
            cut = min(gone, c1) - c0
            mm[j:cut] = np.nan
            times[j:cut] = np.nan
    return times, mm


def decimated_frame(
    header: dict[str, Any] | str, ring: SharedRing, c0: int, c1: int, spc: int, ch0: int, nch: int
) -> bytearray:
    """A window reply (or trace frame) of columns ``[c0, c1)``: layout in the module docstring.

    ``header`` (a dict, or its JSON text) is written first; :func:`decimate`
    then fills the times and min/max in place, in the reply's own bytes. Times
    include the ring's ``time_offset``.
    """
    if not isinstance(header, str):
        header = json.dumps(header, separators=(",", ":"), allow_nan=False, default=_json_default)
    raw = header.encode()
    raw += b" " * (-(4 + len(raw)) % 8)
    k, off = max(0, c1 - c0), 4 + len(raw)
    body = bytearray(off + 8 * k + 8 * k * nch)
    struct.pack_into("<I", body, 0, len(raw))
    body[4:off] = raw
    times = np.frombuffer(body, "<f8", k, off)
    mm = np.frombuffer(body, "<f4", k * nch * 2, off + 8 * k).reshape(k, nch, 2)
    decimate(ring, c0, c1, spc, ch0, nch, out=(times, mm))
    times += ring.time_offset
    return body


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return str(v)


def unpack_window(
    body: bytes | bytearray, n_channels: int | None = None
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Decode a window reply or trace frame: ``(header, times (k,), minmax (k, m, 2))``.

    A trace frame that continues the previous one has no ``n_channels`` in its
    header: pass the reset frame's.
    """
    (n,) = struct.unpack_from("<I", body, 0)
    header = json.loads(body[4 : 4 + n])
    k, m = header["n_cols"], header.get("n_channels", n_channels)
    off = 4 + n
    times = np.frombuffer(body, "<f8", k, off)
    minmax = np.frombuffer(body, "<f4", k * m * 2, off + 8 * k).reshape(k, m, 2)
    return header, times, minmax
