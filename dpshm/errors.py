"""Exceptions raised by dpshm.

Every error derives from :class:`DpshmError`; each subclass also inherits the
matching builtin (``LookupError``, ``ValueError``, ``TimeoutError``, ...) so
callers can catch either. Messages name the thing, the value and the fix.
"""

from __future__ import annotations


class DpshmError(Exception):
    """Base class of every error raised by dpshm."""


class RingNotFoundError(DpshmError, LookupError):
    """No shared-memory ring exists under the requested name."""


class RingFormatError(DpshmError, ValueError):
    """A shared-memory segment is not a dpshm ring of a layout we understand."""


class RingSpaceError(DpshmError, MemoryError):
    """The ring does not fit into the shared-memory filesystem (``/dev/shm``)."""


class StreamNotFoundError(DpshmError, LookupError):
    """No stream (LSL or shared) matches the request."""


class AmbiguousStreamError(DpshmError, LookupError):
    """More than one stream matches the request."""


class UnsupportedPlatformError(DpshmError, RuntimeError):
    """The shared-memory ring is not safe on this CPU (it relies on x86-64 store ordering)."""


class SupervisorNotRunningError(DpshmError, LookupError):
    """No ``dpshm up`` supervisor runs on the requested namespace."""


class SupervisorRunningError(DpshmError, RuntimeError):
    """A supervisor already runs on the requested namespace."""


class ConfigError(DpshmError, ValueError):
    """A configuration file, flag or environment variable is invalid."""


class DpshmTimeoutError(DpshmError, TimeoutError):
    """A bounded wait ran out."""


class ProtocolError(DpshmError, ValueError):
    """A message on a dpshm or Dareplane wire could not be understood."""


class StreamLostError(DpshmError, ConnectionError):
    """An LSL stream's outlet went away while we were reading from it."""


class WorkerError(DpshmError, RuntimeError):
    """A worker could not be started, or failed."""


class RingOwnershipError(DpshmError, PermissionError):
    """Only the creator of a ring may write or unlink it (or its writer is still alive)."""


class UnsafeOwnershipError(DpshmError, PermissionError):
    """A runtime directory, a file in it or a ring that dpshm refuses to trust.

    It belongs to another user, is a symlink, or can be written by other users.
    """


class NoSupervisorError(SupervisorNotRunningError, RingNotFoundError):
    """A stream was asked for by name, but no supervisor runs and no ring has that name."""


class StreamNameTakenError(DpshmError, ValueError):
    """A stream cannot be published under a name another stream already holds."""


class MissingDependencyError(DpshmError, ImportError):
    """An optional dependency (an extra such as ``dpshm[filters]``) is not installed."""
