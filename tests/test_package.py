import subprocess
import sys

import numpy as np
import pytest

import dpshm
from dpshm._mirror import mirrored_window, mirrored_write


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
    buf = np.zeros((2 * capacity, 2), dtype=np.int64)
    head = 0
    history = np.zeros((0, 2), dtype=np.int64)
    for _ in range(50):
        k = int(rng.integers(0, 2 * capacity + 2))
        rows = np.stack([np.arange(head, head + k)] * 2, axis=1)
        head = mirrored_write(buf, head, rows)
        history = np.concatenate([history, rows])
        n = min(capacity, head)
        win = mirrored_window(buf, head, n)
        assert np.shares_memory(win, buf)
        np.testing.assert_array_equal(win, history[head - n : head])
    with pytest.raises(ValueError, match="does not fit"):
        mirrored_window(buf, head, capacity + 1)
