"""Runtime directory, supervisor lock and registry file."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from dpshm.errors import (
    AmbiguousStreamError,
    StreamNotFoundError,
    SupervisorNotRunningError,
    SupervisorRunningError,
)
from dpshm.shm import registry


@pytest.fixture
def ns(unique_name, monkeypatch):
    monkeypatch.setenv("DPSHM_NAMESPACE", unique_name)
    yield unique_name
    shutil.rmtree(registry.namespace_dir(unique_name, create=False), ignore_errors=True)


def test_runtime_dir_is_private(ns):
    d = registry.namespace_dir(ns)
    assert d.is_dir() and d.parent == registry.runtime_dir()
    assert (d.stat().st_mode & 0o777) == 0o700


def test_second_lock_refused_then_free(ns):
    with registry.SupervisorLock(ns):
        with pytest.raises(SupervisorRunningError) as info:
            registry.SupervisorLock(ns)
        msg = str(info.value)
        assert ns in msg and f"pid {os.getpid()}" in msg and "dpshm down" in msg
    registry.SupervisorLock(ns).close()  # free again once released


def test_lock_of_sigkilled_holder_is_released(ns):
    code = textwrap.dedent(
        f"""
        import sys, time
        from dpshm.shm.registry import SupervisorLock
        lock = SupervisorLock({ns!r})
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"locked"
        with pytest.raises(SupervisorRunningError, match=f"pid {proc.pid}"):
            registry.SupervisorLock(ns)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        registry.SupervisorLock(ns).close()
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


def test_the_last_holder_removes_the_empty_namespace_directory(ns):
    d = registry.namespace_dir(ns)
    registry.SupervisorLock(ns).close()
    assert not os.path.lexists(d)  # nothing left behind in the runtime directory
    lock = registry.SupervisorLock(ns)  # and the next one creates it again
    (d / "keep").write_text("not the lock's")
    lock.close()
    assert sorted(p.name for p in d.iterdir()) == ["keep"]  # only an empty one goes


def test_locking_while_a_holder_removes_the_directory_never_fails_otherwise(ns):
    """Two takers and releasers race on one namespace: every attempt either holds
    the lock or is refused as taken, never an OSError from a directory that the
    other one removed between the taker's mkdir and its open."""
    errors: list[BaseException] = []
    held = [0, 0]

    def race(i: int) -> None:
        for _ in range(400):
            try:
                lock = registry.SupervisorLock(ns)
            except SupervisorRunningError:
                continue
            except BaseException as exc:  # anything else fails the test
                errors.append(exc)
                return
            held[i] += 1
            lock.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and min(held) > 0, (errors, held)
    assert not os.path.lexists(registry.namespace_dir(ns, create=False))


def _entry(name, sid, key):
    return registry.StreamEntry(key, name, "EEG", sid, ring=f"dpshm_{key}", generation=1)


def test_registry_roundtrip_and_find(ns):
    with pytest.raises(SupervisorNotRunningError, match="dpshm up"):
        registry.read_registry(ns)
    data = registry.Registry.for_this_process(
        ns,
        endpoints={"heads": "ipc://x"},
        streams={
            "a": _entry("eeg", "amp1", "a"),
            "b": _entry("eeg", "amp2", "b"),
            "c": _entry("markers", "mk", "c"),
        },
    )
    registry.write_registry(data)
    reg = registry.read_registry(ns)
    assert reg.alive() and reg.endpoints["heads"] == "ipc://x"
    assert reg.find("markers").key == "c"
    assert reg.find("eeg", source_id="amp2").key == "b"
    assert reg.find("dpshm_a").key == "a"  # by ring name
    with pytest.raises(AmbiguousStreamError) as info:
        reg.find("eeg")
    assert "amp1" in str(info.value) and "amp2" in str(info.value)
    with pytest.raises(StreamNotFoundError) as info:
        reg.find("emg")
    assert "'emg'" in str(info.value) and "markers" in str(info.value)
    # a registry written by a dead process does not count
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    registry.write_registry(dataclasses.replace(data, pid=int(dead.stdout)))
    with pytest.raises(SupervisorNotRunningError, match="not running"):
        registry.read_registry(ns)
    registry.remove_registry(ns)
    assert registry.read_registry_raw(ns) is None
    assert not list(registry.namespace_dir(ns).glob(".registry-*"))  # no temp files left
