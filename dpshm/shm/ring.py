"""The shared-memory stream ring: one writer, any number of read-only attachers.

A ring is one POSIX shared-memory segment named ``dpshm_<name>`` (``/dev/shm``
on Linux). It imports neither pylsl nor ZeroMQ.

Byte layout (version 1, all integers little-endian)
---------------------------------------------------
::

    offset  size  type     field
    ------  ----  -------  ---------------------------------------------------
         0     8  8s       magic  b"DPSHMRNG"  (written last by the creator)
         8     4  u32      layout version (1)
        12     4  u32      header size in bytes (512)
        16     4  u32      channel format, LSL code (1 float32, 2 double64,
                           3 string, 4 int32, 5 int16, 6 int8, 7 int64)
        20     4  u32      n_channels
        24    16  16s      numpy dtype string, ASCII, NUL padded ("<f4", "|S256")
        40     8  u64      capacity (rows kept; each region holds 2 x capacity)
        48     4  u32      string slot width in bytes (0 for numeric rings)
        52     4  u32      reserved (0)
        56     8  f64      nominal sampling rate (0.0 = irregular)
        64     8  u64      generation (differs between rings re-created under one name)
        72     8  f64      creation time (time.time())
        80     8  u64      writer pid
        88     8  u64      blob offset   (UTF-8 JSON {"channel_names": [...], "meta": {...}})
        96     8  u64      blob length
       104     8  u64      data offset   (64-byte aligned)
       112     8  u64      data length   (2 * capacity * n_channels * itemsize)
       120     8  u64      timestamps offset (64-byte aligned)
       128     8  u64      timestamps length (2 * capacity * 8, float64)
       136     8  u64      total segment size
       144    48           reserved (0)
       192     8  u64      head     total samples published (monotonic)
       200     8  u64      pending  head + k while a chunk of k rows is being written
       208     8  u64      flags    bit 0 = stale (set by the supervisor)
       216     8  f64      time_offset  (LSL time_correction published by the writer)
       224     8  f64      wall-clock time of the last write (time.time())
       232     8  u64      truncated-marker count (string rings)
       240   272           reserved (0) up to the header size
       512     L           blob
    data_o     D           data region: (2 * capacity, n_channels) of dtype, mirrored
      ts_o     T           timestamp region: (2 * capacity,) float64, mirrored

Sample ``i`` lives at row ``i % capacity`` *and* ``i % capacity + capacity`` of
both regions (see :mod:`dpshm._mirror`), so the newest ``n <= capacity`` samples
are always one contiguous view.

Consistency (lock-free, single writer): why ``lost`` is exact
--------------------------------------------------------------
The writer appends a chunk of ``k`` rows at head ``H`` (:meth:`SharedRing.write`):

(W1) store ``pending = H + k``;
(W2) store the rows of samples ``H .. H+k-1`` (both mirror copies; only the
     newest ``capacity`` of them if ``k > capacity``);
(W3) store ``head = H + k``.

Hence, at every moment, ``head <= pending``, and the slot of sample ``i``
(rows ``i % capacity`` and ``i % capacity + capacity``) is next written by
sample ``i + capacity``, whose chunk stored ``pending > i + capacity`` (W1)
before it touched the slot (W2).

A reader with cursor ``c`` (samples ``< c`` already read or counted,
:meth:`SharedRing.read`):

(R1) loads ``head`` into ``h``; sets ``start = max(c, h - capacity)``;
(R2) copies the slots of samples ``[start, h)``;
(R3) loads ``pending`` into ``p``; sets ``first = max(start, p - capacity)``.

Claim: for ``first <= i < h`` the copied slot holds sample ``i``. Sample ``i``
was stored (W2) before ``head > i`` (W3), which R1 saw, so the copy (after R1)
sees it. If the copy had seen any store of a later sample into that slot, it
would also have seen that chunk's earlier ``pending > i + capacity`` (W1), and
so would R3, which loads after the copy: ``p - capacity > i``, i.e.
``i < first``. Samples ``[c, first)`` are gone: the ring no longer holds them
(``i < h - capacity``) or the writer overwrote them during the copy.

So a call returns the rows ``[first, h)``, reports ``lost = first - c`` and
moves the cursor to ``h``: per call, the first returned sample is exactly
``c + lost``, and over all calls ``sum(k) + sum(lost)`` equals the cursor's
advance, i.e. every sample published meanwhile. When ``first >= h`` (the
writer overran every new row during the copy, e.g. a reader preempted in the
middle of it) the call copies again from the new head, up to
:data:`READ_ATTEMPTS` times, and then returns nothing, ``lost = 0`` and the
cursor unchanged: a later call counts that loss together with the rows after
it, so ``lost`` never comes without them. Window copies
(:meth:`SharedRing.copy_range`) use the same R1-R3 with ``start = h - n``.

This relies on the 8-byte aligned stores of ``head``/``pending`` (item stores into
a ``memoryview`` cast to ``"Q"``: one 8-byte move, as numpy's) being atomic and
on the writer's stores and the reader's loads each staying in program order,
which x86-64 (TSO) guarantees; the stores of one string instruction (a
``rep movsb`` memcpy) may reorder among themselves but not with the stores
before or after it (Intel SDM vol. 3, "fast-string operation"). On a weakly
ordered CPU (ARM, POWER) the writer would need a release barrier between W1
and W2 and between W2 and W3, and the reader acquire barriers around R2; pure
Python cannot emit those, so such ports need a tiny C helper. The stress test
``test_ring_stress.py`` checks the claim with reader processes racing a
full-speed writer.

Attaching without the resource tracker
--------------------------------------
Neither creator nor attachers use :class:`multiprocessing.shared_memory.SharedMemory`:
both map the segment themselves (``shm_open`` + ``mmap``, :mod:`dpshm.shm.segment`), attachers with
``PROT_READ``. Hence no resource tracker is ever involved (on any Python
version), an attacher exiting can never unlink the ring, and arrays handed to
readers are read-only by construction. Only the creator unlinks; a creator that
dies without unlinking leaves the segment behind, recognisable by its dead
writer pid (:func:`ring_info`) and removable with :func:`unlink_ring`. The one
exception: for a ring published by a process (:mod:`dpshm.shm.publish`) that
died, its supervisor flags the ring stale (:func:`mark_stale`) and unlinks it
(:mod:`dpshm.shm.derived`).
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import struct
import sys
import time
from typing import Any

import numpy as np

from dpshm._logging import library_logger
from dpshm._mirror import mirror_halves, mirrored_start, mirrored_write
from dpshm.dareplane.procs import pid_alive
from dpshm.errors import (
    RingFormatError,
    RingNotFoundError,
    RingOwnershipError,
    UnsafeOwnershipError,
)
from dpshm.formats import (
    _CODE_TO_FORMAT,
    DEFAULT_STRING_WIDTH,
    FORMATS,
    encode_strings,
    resolve_format,
)
from dpshm.shm.cpu import check_platform
from dpshm.shm.segment import (
    SEGMENT_PREFIX,
    SHM_DIR,
    create_segment,
    list_segments,
    open_segment,
    read_prefix,
    ring_name,
    segment_name,
    unlink_segment,
)

__all__ = [
    "SEGMENT_PREFIX",
    "SHM_DIR",
    "SharedRing",
    "list_rings",
    "mark_stale",
    "ring_info",
    "samples_between",
    "segment_name",
    "unlink_ring",
]

logger = library_logger(__name__)

MAGIC = b"DPSHMRNG"
LAYOUT_VERSION = 1
HEADER_SIZE = 512
ALIGN = 64
FLAG_STALE = 1
#: Copies :meth:`SharedRing.read` tries before it leaves its cursor where it was.
READ_ATTEMPTS = 4

_STATIC = struct.Struct("<8sIIII16sQII d Q d Q QQ QQ QQ Q")
_HOT_OFFSET = 192  # head, pending, flags, time_offset, last_write, n_truncated
_H_HEAD, _H_PENDING, _H_FLAGS, _H_TOFF, _H_LASTW, _H_TRUNC = range(6)  # head must stay 0
_F8 = np.dtype(np.float64)


GAP_TOLERANCE_S = 0.05  # timestamp jitter not counted as missed samples


def samples_between(t_prev: float, t_next: float, srate: float) -> int:
    """Samples a regular stream sent between two consecutive timestamps we hold.

    ``0`` while the gap is within one sample period plus :data:`GAP_TOLERANCE_S`
    (jitter), and for irregular streams (``srate <= 0``): their count is unknown.
    Used for the supervisor's ``lost`` figure and a view's re-attach gaps.
    """
    gap = t_next - t_prev
    if srate <= 0 or gap <= 1.5 / srate + GAP_TOLERANCE_S:
        return 0
    return max(0, round(gap * srate) - 1)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def list_rings() -> list[str]:
    """Names (without the ``dpshm_`` prefix) of the dpshm rings on this machine.

    Segments with the prefix that are not (yet) valid rings are left out.
    """
    return [ring_name(seg) for seg in list_segments() if read_prefix(seg, 8) == MAGIC]


def ring_info(name: str) -> dict[str, Any]:
    """Header fields of ring ``name`` without keeping an attachment.

    Returns a dict with ``name``, ``segment``, ``format``, ``dtype``,
    ``n_channels``, ``capacity``, ``string_width``, ``srate``, ``generation``,
    ``created``, ``writer_pid``, ``writer_alive``, ``head``, ``stale``,
    ``time_offset``, ``last_write``, ``n_truncated``, ``channel_names``,
    ``meta`` and ``nbytes``.
    """
    with SharedRing.attach(name) as ring:
        return ring.info()


def unlink_ring(name: str, force: bool = False) -> bool:
    """Remove a leftover ring segment whose writer is dead.

    Parameters
    ----------
    name : str
        Ring name (with or without the ``dpshm_`` prefix).
    force : bool
        Remove it even when the writer process is alive or the segment is not
        a valid ring.

    Returns
    -------
    bool
        ``True`` if a segment was removed, ``False`` if none existed.
    """
    seg = segment_name(name)
    if not force:
        try:
            info = ring_info(name)
        except RingNotFoundError:
            return False
        if info["writer_alive"]:
            raise RingOwnershipError(
                f"ring {ring_name(seg)!r} is still written by live pid {info['writer_pid']}; "
                f"stop that process (it unlinks its ring) or pass force=True"
            )
    if not unlink_segment(seg):
        return False
    logger.info("unlinked shared-memory ring %r", seg)
    return True


def mark_stale(name: str) -> bool:
    """Set the stale flag of ring ``name`` whose writer died (the supervisor's job).

    The one write to a ring by a process other than its creator: a publishing
    process killed by SIGKILL cannot flag its own ring, and its readers must
    see that no more samples come. Returns ``False`` if the ring does not exist.
    """
    seg = segment_name(name)
    try:
        mm = open_segment(seg, writable=True)
    except (FileNotFoundError, ValueError):
        return False
    try:
        if len(mm) < HEADER_SIZE or mm[0:8] != MAGIC:
            return False
        flags = memoryview(mm)[_HOT_OFFSET : _HOT_OFFSET + 64].cast("Q")
        try:
            flags[_H_FLAGS] = int(flags[_H_FLAGS]) | FLAG_STALE
        finally:
            flags.release()
        return True
    finally:
        mm.close()


def _exists_message(seg: str) -> str:
    name = ring_name(seg)
    try:
        info = ring_info(name)
    except UnsafeOwnershipError:
        return (
            f"shared-memory segment {seg!r} exists and belongs to another user: choose "
            f"another name, or ask its owner (or root) to remove {SHM_DIR}/{seg}"
        )
    except (RingNotFoundError, RingFormatError):
        return (
            f"shared-memory segment {seg!r} exists but is not a usable dpshm ring: remove it "
            f"with dpshm.shm.ring.unlink_ring({name!r}, force=True) or choose another name"
        )
    if info["writer_alive"]:
        return (
            f"ring {name!r} already exists and is written by live pid {info['writer_pid']}: "
            "attach to it with SharedRing.attach / SharedStreamView, or choose another name"
        )
    return (
        f"ring {name!r} already exists, left behind by dead pid {info['writer_pid']}: remove it "
        f"with dpshm.shm.ring.unlink_ring({name!r}) and create it again"
    )


class SharedRing:
    """A mirrored sample + timestamp ring in POSIX shared memory.

    Create with :meth:`create` (the owner, the only writer and the only one
    who may :meth:`unlink`) or :meth:`attach` (read-only, from any process).

    Attributes
    ----------
    name : str
        Ring name without the ``dpshm_`` prefix.
    capacity : int
        Rows kept (the newest ``capacity`` samples).
    n_channels : int
    format : str
        LSL channel format name (``"float32"``, ..., ``"string"``).
    dtype : numpy.dtype
        Storage dtype; ``S<width>`` (fixed-width UTF-8) for string rings.
    srate : float
        Nominal sampling rate, 0.0 for irregular streams.
    generation : int
    created : float
    channel_names : list of str
    meta : dict
    owner : bool
        ``True`` for the creating instance.
    """

    # class-level defaults: close() is safe after a failed __init__
    _mm: mmap.mmap | None = None
    _hot: memoryview | None = None
    _hot_f: memoryview | None = None
    _data_mv: memoryview | None = None
    _ts_mv: memoryview | None = None
    _closed = True
    owner = False

    def __init__(self, seg: str, mm: mmap.mmap, owner: bool) -> None:
        self._seg = seg
        self.name = ring_name(seg)
        self._mm = mm
        self.owner = owner
        self._closed = False
        self._unlinked = False
        self._warned_truncation = False
        self._n_trunc = 0  # truncations of the chunk being written
        self._read_header()

    # -- construction -----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        n_channels: int,
        capacity: int,
        dtype: Any = "float32",
        srate: float = 0.0,
        channel_names: list[str] | None = None,
        meta: dict[str, Any] | None = None,
        string_width: int = DEFAULT_STRING_WIDTH,
        generation: int | None = None,
    ) -> SharedRing:
        """Create ring ``name`` and own it.

        Parameters
        ----------
        name : str
            Ring name; the segment is ``dpshm_<name>``.
        n_channels, capacity : int
            Channel count and number of newest samples kept.
        dtype : str, numpy dtype or int
            Channel format (LSL name, numpy dtype, pylsl ``cf_*`` code or ``str``).
        srate : float
            Nominal sampling rate (0.0 = irregular).
        channel_names : list of str, optional
            Defaults to ``ch_1 ... ch_n`` as Dareplane's StreamWatcher does.
        meta : dict, optional
            JSON-serialisable metadata stored in the segment.
        string_width : int
            Bytes per string slot (string rings only).
        generation : int, optional
            Defaults to ``time.time_ns()``, so a re-created ring differs.

        Raises
        ------
        FileExistsError
            A segment of that name exists; the message says whether its writer
            is alive and what to do (see :func:`unlink_ring`).
        RingSpaceError
            ``/dev/shm`` cannot hold the ring.
        UnsupportedPlatformError
            The ring is not safe on this CPU (see :mod:`dpshm.shm.cpu`).
        """
        check_platform()
        seg = segment_name(name)
        fmt = resolve_format(dtype)
        code, ndt = FORMATS[fmt]
        for label, val in (("n_channels", n_channels), ("capacity", capacity)):
            if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{label} must be a positive integer, got {val!r}")
        n_channels, capacity = int(n_channels), int(capacity)
        if ndt is None:
            if not isinstance(string_width, int) or string_width < 1:
                raise ValueError(f"string_width must be a positive integer, got {string_width!r}")
            ndt = np.dtype(f"S{string_width}")
        else:
            string_width = 0
        if not (isinstance(srate, (int, float)) and srate >= 0):
            raise ValueError(f"srate must be a non-negative number, got {srate!r}")
        names = (
            [f"ch_{i + 1}" for i in range(n_channels)]
            if channel_names is None
            else [str(c) for c in channel_names]
        )
        if len(names) != n_channels:
            raise ValueError(f"got {len(names)} channel_names for {n_channels} channels")
        try:
            blob = json.dumps({"channel_names": names, "meta": meta or {}}).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"meta must be JSON-serialisable: {exc}") from None
        data_off = _align(HEADER_SIZE + len(blob))
        data_len = 2 * capacity * n_channels * ndt.itemsize
        ts_off = _align(data_off + data_len)
        ts_len = 2 * capacity * 8
        total = ts_off + ts_len
        try:
            mm = create_segment(seg, total)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, _exists_message(seg), seg) from None
        try:
            gen = time.time_ns() if generation is None else int(generation)
            _STATIC.pack_into(
                mm, 0, b"\0" * 8, LAYOUT_VERSION, HEADER_SIZE, code, n_channels,
                ndt.str.encode("ascii"), capacity, string_width, 0, float(srate), gen,
                time.time(), os.getpid(), HEADER_SIZE, len(blob), data_off, data_len,
                ts_off, ts_len, total,
            )  # fmt: skip
            mm[HEADER_SIZE : HEADER_SIZE + len(blob)] = blob
            mm[0:8] = MAGIC  # last: attachers never see a half-written header
        except BaseException:
            mm.close()
            unlink_segment(seg)
            raise
        ring = cls(seg, mm, owner=True)
        logger.debug("created ring %r: %d x %d %s, %d bytes", seg, capacity, n_channels, fmt, total)
        return ring

    @classmethod
    def attach(cls, name: str) -> SharedRing:
        """Attach read-only to ring ``name`` (any process; never unlinks it).

        Raises
        ------
        RingNotFoundError
            No such ring (the message lists the existing ones).
        RingFormatError
            The segment is not a dpshm ring of a layout this version understands.
        UnsupportedPlatformError
            The ring is not safe on this CPU (see :mod:`dpshm.shm.cpu`).
        """
        check_platform()
        seg = segment_name(name)
        try:
            mm = open_segment(seg)
        except FileNotFoundError:
            raise RingNotFoundError(
                f"no shared-memory ring named {ring_name(seg)!r} (segment {seg!r}); "
                f"existing rings: {list_rings()}. Check the name or start its writer."
            ) from None
        except ValueError:
            raise RingNotFoundError(
                f"ring {ring_name(seg)!r} is still being created; retry"
            ) from None
        if len(mm) < HEADER_SIZE:
            size = len(mm)
            mm.close()
            raise RingFormatError(
                f"segment {seg!r} ({size} bytes) is too small to be a dpshm ring; remove it "
                f"with dpshm.shm.ring.unlink_ring({ring_name(seg)!r}, force=True)"
            )
        try:
            return cls(seg, mm, owner=False)
        except BaseException:
            mm.close()
            raise

    def _read_header(self) -> None:
        mm = self._mm
        assert mm is not None
        fields = _STATIC.unpack_from(mm, 0)
        magic, version, hsize, code = fields[:4]
        if magic != MAGIC:
            if magic == b"\0" * 8:
                raise RingNotFoundError(f"ring {self.name!r} is still being created; retry")
            raise RingFormatError(
                f"segment {self._seg!r} is not a dpshm ring (magic {magic!r}, expected "
                f"{MAGIC!r}); remove it with dpshm.shm.ring.unlink_ring({self.name!r}, force=True)"
            )
        if version != LAYOUT_VERSION or hsize != HEADER_SIZE:
            raise RingFormatError(
                f"ring {self.name!r} has layout version {version} (header {hsize} bytes); this "
                f"dpshm reads version {LAYOUT_VERSION}: use the same dpshm version as its writer"
            )
        (n_ch, dts, cap, width, _, srate, gen, created, pid) = fields[4:13]
        blob_off, blob_len, data_off, _, ts_off, _, total = fields[13:20]
        if len(mm) < total or code not in _CODE_TO_FORMAT:
            raise RingFormatError(
                f"ring {self.name!r} is corrupt: segment has {len(mm)} bytes, header says "
                f"{total}, format code {code}; recreate it"
            )
        self.format = _CODE_TO_FORMAT[code]
        self.dtype = np.dtype(dts.rstrip(b"\0").decode("ascii"))
        self.n_channels, self.capacity, self.string_width = n_ch, cap, width
        self.srate, self.generation, self.created = srate, gen, created
        self._static_pid = pid
        self.nbytes = total
        try:
            info = json.loads(bytes(mm[blob_off : blob_off + blob_len]).decode("utf-8"))
            self.channel_names: list[str] = list(info["channel_names"])
            self.meta: dict[str, Any] = info["meta"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RingFormatError(
                f"ring {self.name!r} has an unreadable channel-name/metadata blob ({exc}); "
                f"recreate it"
            ) from None
        self._data = np.frombuffer(mm, self.dtype, 2 * cap * n_ch, data_off).reshape(2 * cap, n_ch)
        self._ts = np.frombuffer(mm, "<f8", 2 * cap, ts_off)
        self._data_h, self._ts_h = mirror_halves(self._data), mirror_halves(self._ts)
        # the hot header words as memoryviews: an item load/store costs a quarter of a
        # numpy scalar access, and it is the same single aligned 8-byte load/store
        if sys.byteorder != "little":
            raise RingFormatError("dpshm rings are little-endian; this host is big-endian")
        whole = memoryview(mm)
        hot = whole[_HOT_OFFSET : _HOT_OFFSET + 64]
        self._hot, self._hot_f = hot.cast("Q"), hot.cast("d")
        # byte view of the data region and float64 view of the timestamps for write()'s
        # fast path: a memoryview slice assignment costs a fraction of numpy's
        self._row_bytes = n_ch * self.dtype.itemsize
        self._data_mv = whole[data_off : data_off + 2 * cap * self._row_bytes]
        ts_bytes = whole[ts_off : ts_off + 2 * cap * 8]
        self._ts_mv = ts_bytes.cast("d")
        for view in (hot, ts_bytes, whole):
            view.release()
        self._head = self._hot[_H_HEAD]
        # write() takes arrays of exactly this dtype without further checks (None: strings)
        self._fast_dtype = None if self.string_width else self.dtype

    # -- header fields ------------------------------------------------------------------
    def _live(self) -> memoryview:
        hot = self._hot
        if hot is None:
            raise ValueError(f"ring {self.name!r} is closed")
        return hot

    @property
    def head(self) -> int:
        """Total samples ever published (monotonic)."""
        try:
            return self._hot[0]  # type: ignore[index]  # _H_HEAD; the readers' hottest load
        except TypeError:  # closed: _hot is None
            return self._live()[_H_HEAD]

    @property
    def pending(self) -> int:
        """``head + k`` while a chunk of ``k`` rows is being written, else ``head``."""
        hot = self._hot
        return (hot if hot is not None else self._live())[_H_PENDING]

    @property
    def writer_pid(self) -> int:
        """Pid of the creating (writing) process."""
        return self._static_pid

    @property
    def stale(self) -> bool:
        """``True`` once the supervisor marked the ring stale (its source is gone)."""
        return bool(int(self._live()[_H_FLAGS]) & FLAG_STALE)

    @property
    def time_offset(self) -> float:
        """LSL ``time_correction`` published by the writer (0.0 if never set)."""
        self._live()
        return float(self._hot_f[_H_TOFF])

    @property
    def last_write(self) -> float:
        """Wall-clock time (``time.time()``) of the last write, 0.0 if none."""
        self._live()
        return float(self._hot_f[_H_LASTW])

    @property
    def n_truncated(self) -> int:
        """Number of string values truncated to fit their slot."""
        return int(self._live()[_H_TRUNC])

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def info(self) -> dict[str, Any]:
        """All header fields as a dict (see :func:`ring_info`)."""
        return {
            "name": self.name,
            "segment": self._seg,
            "format": self.format,
            "dtype": self.dtype.str,
            "n_channels": self.n_channels,
            "capacity": self.capacity,
            "string_width": self.string_width,
            "srate": self.srate,
            "generation": self.generation,
            "created": self.created,
            "writer_pid": self.writer_pid,
            "writer_alive": pid_alive(self.writer_pid),
            "head": self.head,
            "stale": self.stale,
            "time_offset": self.time_offset,
            "last_write": self.last_write,
            "n_truncated": self.n_truncated,
            "channel_names": list(self.channel_names),
            "meta": dict(self.meta),
            "nbytes": self.nbytes,
        }

    def _require_owner(self, what: str) -> None:
        if self._closed:
            raise ValueError(f"ring {self.name!r} is closed; cannot {what}")
        if not self.owner:
            raise RingOwnershipError(
                f"ring {self.name!r} is attached read-only; only its creator "
                f"(pid {self.writer_pid}) may {what}"
            )

    def set_stale(self, stale: bool = True) -> None:
        """Set or clear the stale flag (owner only)."""
        self._require_owner("set the stale flag")
        flags = int(self._hot[_H_FLAGS])
        self._hot[_H_FLAGS] = (flags | FLAG_STALE) if stale else (flags & ~FLAG_STALE)

    def set_time_offset(self, offset: float) -> None:
        """Publish the LSL ``time_correction`` of the source (owner only)."""
        self._require_owner("set the time offset")
        self._hot_f[_H_TOFF] = float(offset)

    # -- writing ------------------------------------------------------------------------
    def _coerce(self, samples: Any) -> np.ndarray:
        dt = self.dtype
        if self.string_width:
            self._n_trunc = 0
            arr = np.asarray(samples, dtype=object)
            if arr.size == 0:
                return np.empty((0, self.n_channels), dt)
            self._check_shape(arr)
            enc, self._n_trunc = encode_strings(arr, self.string_width)
            return enc
        is_array = isinstance(samples, np.ndarray)
        arr = samples if is_array else np.asarray(samples)
        if arr.size == 0:
            return np.empty((0, self.n_channels), dt)
        self._check_shape(arr)
        if arr.dtype == dt:
            return arr
        src = arr.dtype
        if np.can_cast(src, dt, "safe") or (src.kind == "f" and dt.kind == "f"):
            return arr
        if not is_array and src.kind in "iu" and dt.kind in "iu":
            info = np.iinfo(dt)
            if info.min <= arr.min() and arr.max() <= info.max:
                return arr
        raise ValueError(
            f"ring {self.name!r} stores {self.format} ({dt}); got samples of dtype {src}, "
            f"which cannot be stored without loss: convert them (e.g. samples.astype({dt.name!r}))"
        )

    def _count_truncations(self) -> None:
        n, self._n_trunc = self._n_trunc, 0
        self._hot[_H_TRUNC] = int(self._hot[_H_TRUNC]) + n
        if not self._warned_truncation:
            self._warned_truncation = True
            logger.warning(
                "ring %r: %d marker(s) longer than %d bytes truncated (counted in "
                "n_truncated; logged once); create the ring with a larger string_width",
                self.name, n, self.string_width,
            )  # fmt: skip

    def _check_shape(self, arr: np.ndarray) -> None:
        if arr.ndim != 2 or arr.shape[1] != self.n_channels:
            raise ValueError(
                f"ring {self.name!r} expects samples of shape (k, {self.n_channels}); "
                f"got shape {arr.shape}: pass one row per sample, one column per channel"
            )

    def write(self, samples: Any, timestamps: Any) -> int:
        """Append ``k`` samples; returns the new head.

        Parameters
        ----------
        samples : array_like, shape (k, n_channels)
            ``k`` may exceed ``capacity`` (only the newest are kept). Numeric
            rings accept the ring dtype, any dtype that casts safely to it
            (e.g. int16 into float32), and float64 into float32 (rounded, as
            LSL does); lists of Python ints are accepted by integer rings if
            they fit. Anything else (e.g. floats into an int ring) raises
            ``ValueError``. String rings take ``str`` or ``bytes`` values;
            values longer than the slot are truncated at a character boundary
            and counted in :attr:`n_truncated`.
        timestamps : array_like, shape (k,)
            LSL timestamps (stored as float64).

        Raises
        ------
        ValueError
            Wrong shape or dtype, or timestamps of the wrong length.
        """
        if self._closed or not self.owner:
            self._require_owner("write")
        if (
            type(samples) is np.ndarray
            and samples.dtype is self._fast_dtype
            and samples.ndim == 2
            and samples.shape[1] == self.n_channels
        ):
            data = samples  # the common case (e.g. pull_chunk's dest_obj): nothing to convert
            try:
                src = samples.data.cast("B")  # its raw bytes, for the fast path below
            except TypeError:  # not C-contiguous: numpy copies it below
                src = None
        else:
            data, src = self._coerce(samples), None
        k = len(data)
        ts = timestamps
        if type(ts) is not np.ndarray or ts.dtype is not _F8:
            try:
                ts = np.asarray(timestamps, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"timestamps must be {k} numbers (float seconds); got {timestamps!r:.80}"
                ) from None
        if ts.ndim != 1 or len(ts) != k:
            raise ValueError(
                f"ring {self.name!r}: expected {k} timestamps (shape ({k},)) for {k} samples; "
                f"got shape {ts.shape}"
            )
        head = self._head
        if k == 0:
            return head
        if self._n_trunc:
            self._count_truncations()
        # consistency protocol: pending, then the rows, then head (see the module docstring)
        hot = self._hot
        hot[_H_PENDING] = head + k
        cap = self.capacity
        start = head % cap
        end = start + k
        if src is not None and end <= cap:
            # fast path, the chunk does not wrap: row and mirror as four memoryview copies
            # (the layout of dpshm._mirror, spelled out: a call to it costs more than a copy)
            a, b, m = start * self._row_bytes, end * self._row_bytes, cap * self._row_bytes
            dmv, tmv, tsrc = self._data_mv, self._ts_mv, ts.data
            dmv[a:b] = src
            dmv[a + m : b + m] = src
            tmv[start:end] = tsrc
            tmv[start + cap : end + cap] = tsrc
        else:
            mirrored_write(self._data_h, head, data, self._ts_h, ts)
        head += k
        hot[_H_HEAD] = head
        self._hot_f[_H_LASTW] = time.time()
        self._head = head
        return head

    # -- reading ------------------------------------------------------------------------
    @property
    def buffer(self) -> np.ndarray:
        """Data storage ``(capacity, n_channels)`` in storage order, zero-copy.

        Sample ``i`` is row ``i % capacity``; row ``head % capacity`` is written
        next. Read-only for attachers, live (see :meth:`window`).
        """
        self._live()
        return self._data[: self.capacity]

    @property
    def buffer_t(self) -> np.ndarray:
        """Timestamp storage ``(capacity,)`` in storage order, zero-copy (see :attr:`buffer`)."""
        self._live()
        return self._ts[: self.capacity]

    def window(self, n: int, head: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Zero-copy views of ``n <= capacity`` samples ending at ``head``.

        ``head`` defaults to the current head. The views are live shared memory
        (read-only for attachers): the writer overwrites them ``capacity``
        samples later. Use :meth:`copy_range` for a checked copy.
        """
        if head is None:
            head = self.head
        elif self._hot is None:
            self._live()
        start = mirrored_start(self.capacity, head, n)  # the same for data and timestamps
        return self._data[start : start + n], self._ts[start : start + n]

    def read(self, cursor: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Copy the samples published after ``cursor``, with exact loss accounting.

        The reader's call (:meth:`SharedStreamView.read_new
        <dpshm.shm.view.SharedStreamView.read_new>` uses it): pass ``0`` or the
        head at attach time first, then the cursor it returns.

        Parameters
        ----------
        cursor : int
            Samples ``< cursor`` were read (or counted lost) before.

        Returns
        -------
        data : np.ndarray, shape (k, n_channels)
            Private copy of samples ``[cursor + lost, new_cursor)`` (raw
            ``S<width>`` bytes for string rings).
        timestamps : np.ndarray, shape (k,)
        lost : int
            Samples after ``cursor`` that the writer overwrote before they
            could be copied: exactly the gap before the first returned row.
            ``0`` whenever ``k == 0``.
        new_cursor : int
            Pass it to the next call. It stays ``cursor`` when the writer
            overwrote every new row while they were copied, in each of
            :data:`READ_ATTEMPTS` attempts: that loss is reported by a later
            call, together with the rows that follow it.

        Notes
        -----
        See the module docstring for why ``lost`` is exact.
        """
        hot = self._hot
        if hot is None:
            hot = self._live()
        cap = self.capacity
        for _attempt in range(READ_ATTEMPTS):
            head = hot[_H_HEAD]  # (R1)
            start = head - cap if head - cap > cursor else cursor
            i = start % cap
            end = i + head - start
            d = self._data[i:end].copy()  # (R2)
            t = self._ts[i:end].copy()
            first = hot[_H_PENDING] - cap  # (R3)
            if first <= start:
                return d, t, start - cursor, head
            if first < head:
                cut = first - start
                return d[cut:], t[cut:], first - cursor, head
            if head == start:  # nothing new (a chunk in flight overwrites read rows only)
                return d, t, 0, cursor
        return d[:0], t[:0], 0, cursor

    def copy_range(
        self, start: int, stop: int, data: bool = True, timestamps: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        """Copy samples ``[start, stop)`` (``stop - start <= capacity``, ``stop <= head``).

        Returns ``(data, timestamps, first)``: only samples ``[first, stop)`` are
        returned, where ``first > start`` if the writer overwrote the oldest rows
        before or while they were copied (``first - start`` samples lost).
        ``start`` may be negative to include never-written rows (zeros). Pass
        ``data=False`` or ``timestamps=False`` to skip one copy (``None`` returned).
        """
        hot = self._live()
        n = stop - start
        cap = self.capacity
        if not 0 <= n <= cap:
            raise ValueError(f"cannot copy {n} samples from a ring of capacity {cap}")
        i = mirrored_start(cap, stop, n)
        d = self._data[i : i + n].copy() if data else None
        t = self._ts[i : i + n].copy() if timestamps else None
        first = max(start, hot[_H_PENDING] - cap)
        if first > start:
            cut = min(first - start, n)
            return (
                None if d is None else d[cut:],
                None if t is None else t[cut:],
                start + cut,
            )
        return d, t, start

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Detach (idempotent). Arrays still held by the caller stay valid."""
        if self._closed:
            return
        self._closed = True
        views = (self._hot, self._hot_f, self._data_mv, self._ts_mv)
        self._data = self._ts = self._data_h = self._ts_h = None  # type: ignore[assignment]
        self._hot = self._hot_f = self._data_mv = self._ts_mv = None
        for view in views:
            if view is not None:
                view.release()  # else the mmap counts it as an export and cannot close
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                # the caller still holds views; the mapping is released when they die
                logger.debug("ring %r closed while views are alive; unmapped later", self.name)

    def unlink(self) -> None:
        """Remove the segment (owner only; idempotent). Attachers keep their mapping."""
        if not self.owner:
            raise RingOwnershipError(
                f"ring {self.name!r} is attached read-only; only its creator "
                f"(pid {self.writer_pid}) may unlink it"
            )
        if self._unlinked:
            return
        self._unlinked = True
        unlink_segment(self._seg)

    def __enter__(self) -> SharedRing:
        return self

    def __exit__(self, *exc: object) -> None:
        """Close; the owner also unlinks."""
        if self.owner:
            self.unlink()
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"head={self.head}"
        role = "owner" if self.owner else "attached"
        return (
            f"<SharedRing {self.name!r} {self.format} {self.n_channels}ch x {self.capacity} "
            f"{role} {state}>"
        )
