"""POSIX shared-memory segments for dpshm rings, without the resource tracker.

Segment names are ``dpshm_<name>``. Segments are opened with ``shm_open`` and
mapped with :mod:`mmap` directly (never through
:class:`multiprocessing.shared_memory.SharedMemory`), so no process ever
registers one with multiprocessing's resource tracker: an attaching process
that exits cannot unlink a ring (gh-82300), on any Python version. Attachers
map with ``PROT_READ``. Segments are created with mode ``0o600`` (same user).
"""

from __future__ import annotations

import _posixshmem
import errno
import mmap
import os
import re

import numpy as np

from dpshm._logging import library_logger
from dpshm.errors import RingSpaceError, UnsafeOwnershipError

logger = library_logger(__name__)

SEGMENT_PREFIX = "dpshm_"
SHM_DIR = "/dev/shm"
MAX_SEGMENT_NAME = 250  # NAME_MAX (255) minus some room

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_FIX_SPACE = (
    "use a smaller buffer or fewer channels, or enlarge {dir} (e.g. `docker run --shm-size=1g`)"
)


def segment_name(name: str) -> str:
    """Return the shared-memory segment name of ring ``name`` (``dpshm_<name>``).

    A name that already carries the prefix is not prefixed twice. Raises
    ``ValueError`` for names with characters other than letters, digits and
    ``_-.`` or names too long for POSIX shared memory.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"ring name must be a non-empty string, got {name!r}")
    seg = name if name.startswith(SEGMENT_PREFIX) else SEGMENT_PREFIX + name
    if not _NAME_RE.match(name) or seg == SEGMENT_PREFIX:
        raise ValueError(
            f"invalid ring name {name!r}: use only letters, digits and '_', '-', '.' "
            f"(e.g. 'eeg' or 'EEG-1')"
        )
    if len(seg) > MAX_SEGMENT_NAME:
        raise ValueError(
            f"ring name {name[:40]!r}... is {len(name)} characters; the segment name "
            f"must fit {MAX_SEGMENT_NAME} characters: use a shorter name"
        )
    return seg


def ring_name(seg: str) -> str:
    """The ring name of segment ``seg`` (the prefix removed)."""
    return seg[len(SEGMENT_PREFIX) :] if seg.startswith(SEGMENT_PREFIX) else seg


def owned_by_me(seg: str) -> bool:
    """Whether segment ``seg`` exists and belongs to this process's user."""
    try:
        return os.lstat(os.path.join(SHM_DIR, seg)).st_uid == os.getuid()
    except OSError:
        return False


def list_segments() -> list[str]:
    """Names of all ``dpshm_*`` segments in ``/dev/shm`` (empty where there is none)."""
    try:
        return sorted(e for e in os.listdir(SHM_DIR) if e.startswith(SEGMENT_PREFIX))
    except OSError:
        return []


def read_prefix(seg: str, n: int) -> bytes:
    """The first ``n`` bytes of segment ``seg`` (``b""`` if it cannot be read)."""
    try:
        with open(os.path.join(SHM_DIR, seg), "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def check_space(nbytes: int, label: str) -> None:
    """Raise :class:`RingSpaceError` if ``/dev/shm`` cannot hold ``nbytes`` more."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if nbytes > free:
        raise RingSpaceError(
            f"ring {label!r} needs {nbytes} bytes ({nbytes / 2**20:.1f} MiB) of shared memory "
            f"but {SHM_DIR} has only {free} bytes ({free / 2**20:.1f} MiB) free: "
            + _FIX_SPACE.format(dir=SHM_DIR)
        )


def create_segment(seg: str, size: int) -> mmap.mmap:
    """Create segment ``seg`` of ``size`` bytes, reserve and pre-fault it; map read-write.

    The space is reserved with ``posix_fallocate`` (so a full ``/dev/shm`` is an
    error here, not a SIGBUS on a later write) and every page is touched:
    first-touch writes on these machines run at 0.3-1.3 GB/s instead of ~9 GB/s.

    Raises
    ------
    FileExistsError
        The segment exists.
    RingSpaceError
        The allocation failed for lack of space.
    """
    check_space(size, ring_name(seg))
    fd = _posixshmem.shm_open("/" + seg, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    mm = None
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                raise RingSpaceError(
                    f"ring {ring_name(seg)!r} needs {size} bytes of shared memory; the "
                    f"allocation failed ({exc.strerror}): " + _FIX_SPACE.format(dir=SHM_DIR)
                ) from None
            os.ftruncate(fd, size)  # filesystems without fallocate
        mm = mmap.mmap(fd, size)
        np.frombuffer(mm, dtype=np.uint8)[:] = 0  # pre-fault every page
    except BaseException:
        if mm is not None:
            mm.close()
        os.close(fd)
        _posixshmem.shm_unlink("/" + seg)
        raise
    os.close(fd)
    return mm


def open_segment(seg: str, writable: bool = False) -> mmap.mmap:
    """Map existing segment ``seg`` read-only (``PROT_READ``), or read-write.

    ``writable`` is for the supervisor acting for a writer that died (it flags
    the dead writer's ring stale); readers never map a segment writable.
    Raises ``FileNotFoundError`` if it does not exist; an empty segment (still
    being created) yields ``ValueError``; a segment created by another user
    :class:`~dpshm.errors.UnsafeOwnershipError` (checked on the open descriptor,
    so what is checked is what is mapped).
    """
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW
    fd = _posixshmem.shm_open("/" + seg, flags, 0)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise UnsafeOwnershipError(
                f"refusing to attach to shared-memory segment {seg!r}: it was created by uid "
                f"{st.st_uid}, not by you (uid {os.getuid()}); its data and header could be "
                f"forged. Only rings of your own supervisor are read. Ask its owner (or root) "
                f"to remove {SHM_DIR}/{seg}, or run the writer as your user."
            )
        size = st.st_size
        if size == 0:
            raise ValueError(f"segment {seg!r} is empty")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)
    finally:
        os.close(fd)


def unlink_segment(seg: str) -> bool:
    """Remove segment ``seg``; ``False`` if it did not exist."""
    try:
        _posixshmem.shm_unlink("/" + seg)
    except FileNotFoundError:
        return False
    return True
