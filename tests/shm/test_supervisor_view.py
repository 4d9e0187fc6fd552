"""SharedStreamView's supervisor extension on a ring without a supervisor:
lookup by ring name keeps working, wait() and update(wait=...) are bounded."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from dpshm.errors import NoSupervisorError, RingNotFoundError, SupervisorNotRunningError
from dpshm.shm import registry
from dpshm.shm.ring import SharedRing
from dpshm.shm.view import SharedStreamView


@pytest.fixture
def ring(unique_name, monkeypatch):
    monkeypatch.setenv("DPSHM_NAMESPACE", unique_name)  # a namespace without supervisor
    r = SharedRing.create(unique_name, 2, 100, "float32", srate=100.0)
    yield r
    r.unlink()
    r.close()
    shutil.rmtree(registry.namespace_dir(unique_name, create=False), ignore_errors=True)


def test_wait_and_update_on_plain_ring(ring):
    with SharedStreamView(ring.name) as v:
        assert v.wait(0.02) is False  # nothing new: bounded
        assert v.update(wait=0.02) == 0
        timer = threading.Timer(0.05, ring.write, (np.ones((5, 2)), np.arange(5.0)))
        timer.start()
        try:
            assert v.wait(5.0) is True
        finally:
            timer.join(5)
        assert v.update(wait=1.0) == 5 and v.n_new == 5
        ring.write(np.full((3, 2), 2.0), np.arange(5.0, 8.0))
        assert v.update(wait=1.0) == 3
        np.testing.assert_array_equal(v.samples, np.full((3, 2), 2.0, np.float32))
    with pytest.raises(ValueError, match="closed"):
        v.wait(0.01)


def test_unknown_name_without_supervisor(ring):
    with pytest.raises(NoSupervisorError) as info:
        SharedStreamView(f"{ring.name}-missing")
    assert isinstance(info.value, RingNotFoundError)
    assert isinstance(info.value, SupervisorNotRunningError)
    msg = str(info.value)
    assert f"{ring.name}-missing" in msg and "dpshm up" in msg and ring.name in msg
