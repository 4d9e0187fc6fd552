"""The runtime directory and its files: private to their user, or refused.

``$XDG_RUNTIME_DIR/dpshm/<namespace>/`` (or ``/tmp/dpshm-<uid>/<namespace>/``)
holds the supervisor's lock, registry, status and ZeroMQ sockets. Another
local user who could create, replace or link anything there could take over
a supervisor or feed consumers forged data, so:

* every directory on the way (``$XDG_RUNTIME_DIR``, ``dpshm``,
  ``/tmp/dpshm-<uid>``, the namespace) must be a real directory (not a
  symlink), owned by the current uid and not writable by group or others;
  dpshm creates its own with mode 0700;
* files in it are opened with ``O_NOFOLLOW`` and must be regular files of the
  current uid (checked on the open descriptor);

otherwise :class:`~dpshm.errors.UnsafeOwnershipError` names the path, what was
found and the fix. Writers create files with ``mkstemp`` (``O_EXCL``) and
rename them into place (see :mod:`dpshm.shm.registry`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from dpshm.config import namespace_from_env, validate_namespace
from dpshm.errors import UnsafeOwnershipError

ENV_RUNTIME_DIR = "XDG_RUNTIME_DIR"


def _unsafe(path: Path, found: str, fix: str) -> UnsafeOwnershipError:
    return UnsafeOwnershipError(
        f"refusing to use {str(path)!r}: {found}. dpshm keeps its lock, registry and sockets "
        f"there, so another user could take over or forge them. {fix}"
    )


def check_private(path: Path, *, what: str = "directory", fix: str | None = None) -> os.stat_result:
    """Check that ``path`` (not followed if a symlink) is ours and not writable by others.

    Returns its ``lstat`` result. Raises :class:`UnsafeOwnershipError` naming the
    path, what was found (owner, mode, symlink) and the fix.
    """
    fix = fix or f"Remove it (as its owner or root: `rm -rf {path}`) and start again."
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise _unsafe(path, f"it is a symlink (to {os.readlink(path)!r})", fix)
    kind_ok = stat.S_ISDIR(st.st_mode) if what == "directory" else stat.S_ISREG(st.st_mode)
    if not kind_ok:
        raise _unsafe(path, f"it is not a {what} (mode {stat.filemode(st.st_mode)})", fix)
    if st.st_uid != os.getuid():
        raise _unsafe(path, f"it is owned by uid {st.st_uid}, not by you (uid {os.getuid()})", fix)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _unsafe(
            path,
            f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            f"Run `chmod go-w {path}` (or remove it) and start again.",
        )
    return st


def _private_dir(path: Path, create: bool) -> Path:
    """``path`` as a directory of ours, mode 0700 when we create it (see :func:`check_private`).

    A namespace directory is removed when its last supervisor stops (if empty):
    without ``create``, one that vanishes meanwhile is simply absent; with it,
    one removed right after the ``mkdir`` raises ``FileNotFoundError``, which the
    supervisor lock (the one place that race can happen) retries.
    """
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        check_private(path)
    except FileNotFoundError:
        if create:
            raise
    return path


def runtime_dir(create: bool = True) -> Path:
    """The per-user runtime directory: ``$XDG_RUNTIME_DIR/dpshm`` or ``/tmp/dpshm-<uid>``.

    Every directory on the way that dpshm owns or relies on is checked with
    :func:`check_private`: ``$XDG_RUNTIME_DIR`` itself, ``dpshm`` inside it, or
    ``/tmp/dpshm-<uid>`` (created 0700). A directory that is a symlink, owned by
    another user, or writable by group or others is refused with
    :class:`UnsafeOwnershipError`.
    """
    base = os.environ.get(ENV_RUNTIME_DIR)
    if base:
        root = Path(base)
        if os.path.lexists(root):
            check_private(
                root,
                fix=f"Set {ENV_RUNTIME_DIR} to a directory of yours with mode 0700 "
                "(or unset it to use the temporary directory).",
            )
        elif create:
            raise UnsafeOwnershipError(
                f"{ENV_RUNTIME_DIR}={base!r} does not exist; set it to an existing directory "
                "of yours (mode 0700) or unset it."
            )
        return _private_dir(root / "dpshm", create)
    return _private_dir(Path(tempfile.gettempdir()) / f"dpshm-{os.getuid()}", create)


def namespace_dir(namespace: str | None = None, create: bool = True) -> Path:
    """Directory of one namespace (default: ``$DPSHM_NAMESPACE`` or ``default``)."""
    ns = namespace_from_env() if namespace is None else validate_namespace(namespace)
    return _private_dir(runtime_dir(create) / ns, create)


def open_private(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """``os.open`` without following a symlink; the file must be a regular file of ours.

    Raises ``FileNotFoundError`` when it does not exist (and ``O_CREAT`` is not
    given) and :class:`UnsafeOwnershipError` when it is a symlink or another
    user's file.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            check_private(path, what="file")  # raises, naming the symlink
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        raise _unsafe(
            path,
            f"it is not a regular file of yours (owner uid {st.st_uid}, "
            f"mode {stat.filemode(st.st_mode)})",
            f"Remove it (`rm {path}`) and start again.",
        )
    return fd


def read_private(path: Path) -> bytes:
    """The content of a file of ours (see :func:`open_private`)."""
    fd = open_private(path)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()
