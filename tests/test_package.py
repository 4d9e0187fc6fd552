import subprocess
import sys

import numpy as np
import pytest

import dpshm
from dpshm._mirror import mirror_halves, mirrored_window, mirrored_write


def test_version_and_all():
    assert isinstance(dpshm.__version__, str) and dpshm.__version__.count(".") == 2
    assert "SharedStreamView" in dpshm.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dpshm.nope  # noqa: B018


def test_import_configures_no_logging_and_imports_nothing_heavy():
    code = (
        "import logging, sys, dpshm;"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers;"
        "heavy = [m for m in ('pylsl', 'zmq', 'numpy') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("capacity", [1, 3, 8])
def test_mirrored_ring_matches_reference(capacity):
    rng = np.random.default_rng(capacity)
    buf = np.full((2 * capacity, 2), -1, dtype=np.int64)
    halves = mirror_halves(buf)
    assert np.shares_memory(halves, buf)
    head = 0
    history = np.zeros((0, 2), dtype=np.int64)
    for _ in range(50):
        k = int(rng.integers(0, 2 * capacity + 2))
        rows = np.stack([np.arange(head, head + k)] * 2, axis=1)
        head = mirrored_write(halves, head, rows)
        history = np.concatenate([history, rows])
        # every position holds the newest sample congruent to it, in both halves
        for p in range(capacity):
            held = [i for i in range(head) if i % capacity == p]
            want = held[-1] if held else -1
            assert buf[p, 0] == buf[p + capacity, 0] == want, (p, head)
        n = min(capacity, head)
        win = mirrored_window(buf, head, n)
        assert np.shares_memory(win, buf)
        np.testing.assert_array_equal(win, history[head - n : head])
    with pytest.raises(ValueError, match="does not fit"):
        mirrored_window(buf, head, capacity + 1)
    with pytest.raises(ValueError, match="2 \\* capacity rows; got 3"):
        mirror_halves(np.zeros((3, 2)))
    strided = np.zeros((8, 2))[::2]
    assert np.shares_memory(mirror_halves(strided), strided)
