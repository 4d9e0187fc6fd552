"""SharedRing across real processes: attach/exit without the resource tracker,
dead writers, and one writer against three concurrent readers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import ROOT, join_readers, kill_alive

from dpshm.shm.ring import SharedRing, ring_info, segment_name, unlink_ring
from dpshm.shm.view import SharedStreamView

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
BAD_STDERR = ("resource_tracker", "KeyError", "leaked", "Traceback", "Warning", "Error")

# Runs as its own interpreter so that its stderr captures the resource tracker's as well.
TRACKER_SCENARIO = textwrap.dedent(
    """
    import json, multiprocessing as mp, os, subprocess, sys
    import numpy as np
    from dpshm.shm.ring import SharedRing

    CHILD = '''
    import sys
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()  # a tracker runs in this independent process
    from dpshm.shm.ring import SharedRing
    with SharedRing.attach(sys.argv[1]) as r:
        print(float(r.window(1)[0][0, 0]))
    '''

    def child(name, q):
        with SharedRing.attach(name) as r:
            q.put(float(r.window(1)[0][0, 0]))

    if __name__ == "__main__":
        name = sys.argv[1]
        seg = "/dev/shm/dpshm_" + name
        out = {}
        ring = SharedRing.create(name, 1, 8, "float64")
        try:
            ring.write(np.array([[42.0]]), [1.0])
            for method in ("spawn", "fork"):
                ctx = mp.get_context(method)
                q = ctx.Queue()
                p = ctx.Process(target=child, args=(name, q))
                p.start()
                out[method] = q.get(timeout=60)
                p.join(60)
                out[method + "_exitcode"] = p.exitcode
                out[method + "_survives"] = os.path.exists(seg)
            r = subprocess.run([sys.executable, "-c", CHILD, name], capture_output=True,
                               text=True, timeout=60)
            out["subprocess"] = r.stdout.strip()
            out["subprocess_stderr"] = r.stderr
            out["subprocess_exitcode"] = r.returncode
            out["subprocess_survives"] = os.path.exists(seg)
            with SharedRing.attach(name) as again:
                out["value_after"] = float(again.window(1)[0][0, 0])
        finally:
            ring.unlink()
            ring.close()
        out["unlinked"] = not os.path.exists(seg)
        print(json.dumps(out))
    """
)


def test_attaching_children_never_destroy_the_ring(unique_name, tmp_path):
    script = tmp_path / "scenario.py"
    script.write_text(TRACKER_SCENARIO)
    r = subprocess.run(
        [sys.executable, str(script), unique_name],
        capture_output=True, text=True, timeout=90, env=ENV,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for method in ("spawn", "fork", "subprocess"):
        assert float(out[method]) == 42.0
        assert out[f"{method}_exitcode"] == 0
        assert out[f"{method}_survives"], f"the {method} child's exit removed the segment"
    assert out["value_after"] == 42.0 and out["unlinked"]
    for stderr in (r.stderr, out["subprocess_stderr"]):
        assert not any(word in stderr for word in BAD_STDERR), stderr


def _create_and_hang(name: str, ready) -> None:
    ring = SharedRing.create(name, 2, 8, "float32")
    ring.write(np.ones((3, 2), np.float32), [1, 2, 3])
    ready.set()
    time.sleep(60)  # killed by the test long before


def test_dead_writer_leaves_segment_that_unlink_ring_removes(unique_name):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_create_and_hang, args=(unique_name, ready))
    p.start()
    try:
        assert ready.wait(30)
        info = ring_info(unique_name)
        assert info["writer_pid"] == p.pid and info["writer_alive"] and info["head"] == 3
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        info = ring_info(unique_name)
        assert not info["writer_alive"]
        with pytest.raises(FileExistsError, match=rf"dead pid {p.pid}.*unlink_ring"):
            SharedRing.create(unique_name, 2, 8)
        assert unlink_ring(unique_name)
        assert not os.path.exists(f"/dev/shm/{segment_name(unique_name)}")
    finally:
        kill_alive([p])
        unlink_ring(unique_name, force=True)


N_CH = 4


def _expected(idx: np.ndarray) -> np.ndarray:
    return idx[:, None] * N_CH + np.arange(N_CH)


def _writer(name, capacity, n_total, seed, ready, barrier) -> None:
    rng = np.random.default_rng(seed)
    with SharedRing.create(name, N_CH, capacity, "int64") as ring:
        ready.set()
        barrier.wait(60)
        i = 0
        while i < n_total:
            k = min(int(rng.integers(1, 2 * capacity)), n_total - i)  # some chunks > capacity
            idx = np.arange(i, i + k)
            ring.write(_expected(idx), idx.astype(np.float64))
            i += k


def _reader(name, n_total, ready, barrier, results) -> None:
    assert ready.wait(60)
    with SharedStreamView(name) as sv:
        barrier.wait(60)
        seen = delivered = lost = bad = reads = 0
        deadline = time.monotonic() + 60
        while seen < n_total and time.monotonic() < deadline:
            d, t, n_lost = sv.read_new()
            reads += 1
            seen += n_lost
            idx = np.arange(seen, seen + len(t))
            bad += int(not np.array_equal(d, _expected(idx))) + int(not np.array_equal(t, idx))
            seen += len(t)
            delivered += len(t)
            lost += n_lost
        results.put((delivered, lost, bad, sv.lost_samples, reads))


def test_one_writer_three_readers_exact_accounting(unique_name):
    n_total, capacity = 1_500_000, 64
    ctx = mp.get_context("spawn")
    ready, barrier, results = ctx.Event(), ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(unique_name, capacity, n_total, 7, ready, barrier))]
    procs += [
        ctx.Process(target=_reader, args=(unique_name, n_total, ready, barrier, results))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=90) for _ in range(3)]
        join_readers(procs)
    finally:
        kill_alive(procs)
        unlink_ring(unique_name, force=True)
    for delivered, lost, bad, lost_total, reads in got:
        assert bad == 0, "a reader returned a sample that does not match its index"
        assert delivered + lost == n_total and lost == lost_total
        assert delivered > 0 and reads > 1
    # a 64-row ring against a full-speed writer: readers must have lost (and said so)
    assert sum(g[1] for g in got) > 0
