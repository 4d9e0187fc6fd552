"""Processes: whether one is alive, and stopping one with everything it started.

:func:`pid_alive` is the package's one answer to "is this process alive" (the
registry's supervisor pid, a ring's writer pid, the processes being stopped).
:func:`stop_process_tree`: SIGTERM to the whole tree, a grace period, SIGKILL to
whatever is left, and a bounded wait. Used by the command server's ``STOP`` and
by the supervisor's workers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

import psutil

from dpshm._logging import library_logger

logger = library_logger(__name__)

__all__ = ["pid_alive", "start_time", "stop_process_tree"]

#: How far two readings of one process's start may differ (psutil's wall-clock
#: create time, where /proc is missing, moves with the system clock's boot time).
START_SLACK_S = 1.0
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def start_time(pid: int) -> float | None:
    """When process ``pid`` started, as a value that identifies it; None if it does not exist.

    On Linux: seconds since boot, from ``/proc/PID/stat`` (the kernel's tick
    count, which no clock change moves). Elsewhere: psutil's create time.
    psutil's create time on Linux is *not* used: it adds the boot time of
    ``/proc/stat``, which the kernel derives from the wall clock, so it moves
    by a second (or by any clock step NTP makes) while the process runs, and a
    live supervisor looked dead to its consumers.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None  # Linux: no such process
    except OSError:
        return None
    else:  # the name (field 2) may hold spaces and ')': fields resume after the last ')'
        fields = stat[stat.rindex(b")") + 2 :].split()
        return int(fields[19]) / _CLK_TCK  # field 22: starttime, in clock ticks
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):
        return None


def pid_alive(proc: int | psutil.Process, started: float | None = None) -> bool:
    """Whether a process is alive: it exists, is not a zombie, and is the same process.

    Parameters
    ----------
    proc : int or psutil.Process
        A pid, or a :class:`psutil.Process` (then "the same process" is
        psutil's own check: the pid was not reused since it was created).
    started : float, optional
        With a pid: the process's :func:`start_time` as recorded (e.g. in a
        registry); a process with that pid but another start time is a reused
        pid, not alive.

    Notes
    -----
    A zombie is dead: it has exited, and only its parent (or init, for orphans)
    can reap it. Works for other users' processes too (``/proc``), so no
    ``os.kill(pid, 0)`` permission question arises.
    """
    try:
        if isinstance(proc, psutil.Process):
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        if isinstance(proc, bool) or not isinstance(proc, int) or proc <= 0:
            return False
        if started is not None:
            now = start_time(proc)
            if now is None or abs(now - started) >= START_SLACK_S:
                return False
        return psutil.Process(proc).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` until no process of ``procs`` is alive; return the living."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if pid_alive(p)]
    delay = 0.001
    while alive and time.monotonic() < deadline:
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.05)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def stop_process_tree(
    proc_or_pid: subprocess.Popen | psutil.Process | int,
    grace_s: float = 2.0,
    kill_timeout_s: float = 2.0,
) -> bool:
    """Stop a process and all its descendants; return when they are gone.

    The tree (the process and its recursive children, collected *before*
    signalling, so children that get re-parented are not lost) receives
    SIGTERM; whatever is still alive after ``grace_s`` receives SIGKILL and is
    waited for up to ``kill_timeout_s``. A ``Popen`` is reaped so it leaves no
    zombie.

    Parameters
    ----------
    proc_or_pid : subprocess.Popen | psutil.Process | int
        The root of the tree.
    grace_s : float
        Seconds the tree gets to exit after SIGTERM.
    kill_timeout_s : float
        Seconds to wait for the processes to disappear after SIGKILL.

    Returns
    -------
    bool
        ``True`` if no process of the tree is alive any more.
    """
    if grace_s < 0 or kill_timeout_s < 0:
        raise ValueError(
            f"grace_s and kill_timeout_s must be >= 0, got {grace_s!r} and {kill_timeout_s!r}"
        )
    popen = proc_or_pid if isinstance(proc_or_pid, subprocess.Popen) else None
    pid = proc_or_pid if isinstance(proc_or_pid, int) else proc_or_pid.pid
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if popen is not None and popen.poll() is not None:
        # the root already exited (pid may be recycled): only its former children matter
        tree = [p for p in tree if p.pid != pid]
    deadline = time.monotonic() + grace_s
    for p in tree:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace_s)
    # one grace period in total (a root ignoring SIGTERM used up the first one)
    alive = _wait_gone(tree, max(0.0, deadline - time.monotonic()))
    if alive:
        logger.warning(
            "%d process(es) ignored SIGTERM for %.1f s, sending SIGKILL: %s",
            len(alive),
            grace_s,
            [p.pid for p in alive],
        )
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        alive = _wait_gone(alive, kill_timeout_s)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=kill_timeout_s)
    if alive:
        logger.error("processes %s survived SIGKILL", [p.pid for p in alive])
    return not alive
