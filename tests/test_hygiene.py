"""The session's /dev/shm check (conftest.py) tells this session's leaks from the
live rings of other sessions running on the same machine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from conftest import _foreign
from helpers import wait_until

from dpshm.shm.ring import SharedRing, segment_name, unlink_ring

ROOT = Path(__file__).resolve().parents[1]

# a ring writer that is not our descendant (double fork: re-parented to init)
OUTSIDER = textwrap.dedent(
    """
    import os, sys, time
    if os.fork():
        os._exit(0)
    os.setsid()
    from dpshm.shm.ring import SharedRing
    ring = SharedRing.create(sys.argv[1], 1, 4)
    print(os.getpid(), flush=True)
    time.sleep(60)
    """
)


def test_foreign_live_rings_are_not_leaks_but_ours_and_dead_ones_are(unique_name):
    outsider = f"{unique_name}_outsider"
    proc = subprocess.Popen(
        [sys.executable, "-c", OUTSIDER, outsider],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    pid = None
    try:
        pid = int(proc.stdout.readline())
        proc.wait(10)
        assert _foreign(segment_name(outsider))  # live, not in our process tree
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _foreign(segment_name(outsider)), 10)  # dead writer: a leak
        with SharedRing.create(unique_name, 1, 4) as mine:
            mine.write(np.zeros((1, 1), np.float32), [0.0])
            assert not _foreign(segment_name(unique_name))  # written by this process
    finally:
        proc.stdout.close()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        unlink_ring(outsider, force=True)
