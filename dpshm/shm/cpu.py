"""Which CPUs the lock-free ring is safe on, and the check that refuses the others.

The ring's consistency rule (:mod:`dpshm.shm.ring`) needs aligned 8-byte stores
and loads to be single, atomic moves and stores/loads not to be reordered with
each other. 64-bit x86 (TSO) guarantees both. Weakly ordered CPUs (ARM/aarch64:
Raspberry Pi, Jetson, Apple silicon; POWER; RISC-V) need release/acquire
barriers that pure Python cannot emit, and a 32-bit process may split a 64-bit
store in two: a reader there could see a head before the rows it announces and
return wrong samples without noticing. So creating or attaching a ring, and
``dpshm up``, refuse such a host with :class:`~dpshm.errors.UnsupportedPlatformError`
unless ``DPSHM_ALLOW_UNSAFE_PLATFORM=1`` says the user accepts that risk.
"""

from __future__ import annotations

import os
import platform
import sys

from dpshm.config import ENV_ALLOW_UNSAFE_PLATFORM
from dpshm.errors import UnsupportedPlatformError

#: ``platform.machine()`` names of 64-bit x86 (Linux/macOS, Windows, BSD spellings)
SAFE_MACHINES = frozenset({"x86_64", "amd64", "x64", "x86-64"})


def platform_problem() -> str | None:
    """Why the ring is not safe on this host, or None when it is."""
    machine = platform.machine()
    if machine.lower() not in SAFE_MACHINES:
        return f"this CPU ({machine or 'unknown'}) is not x86-64"
    if sys.maxsize <= 2**32:
        return f"this Python is a 32-bit build (on {machine})"
    return None


def check_platform() -> None:
    """Refuse (raise) on a host where the lock-free ring is not known to be safe.

    Raises
    ------
    UnsupportedPlatformError
        Not 64-bit x86 and ``DPSHM_ALLOW_UNSAFE_PLATFORM`` is not ``1``.
    """
    problem = platform_problem()
    if problem is None or os.environ.get(ENV_ALLOW_UNSAFE_PLATFORM) == "1":
        return
    raise UnsupportedPlatformError(
        f"dpshm's shared-memory ring is only safe on 64-bit x86 (x86-64/AMD64), and {problem}: "
        "its lock-free reads rely on x86-64 store ordering, so on this CPU a reader could "
        "return samples that were still being written. Use LSL inlets (or dpshm.StreamWatcher) "
        f"here, or set {ENV_ALLOW_UNSAFE_PLATFORM}=1 to run anyway at that risk."
    )
