"""Platform honesty: the lock-free ring refuses CPUs other than 64-bit x86.

We cannot run on aarch64 here, so ``platform.machine`` is faked in-process (the
one place a fake is the only option); everything else is real: real rings, the
real supervisor class and the real command line entry point.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from dpshm import config as C
from dpshm.cli.main import main
from dpshm.errors import DpshmError, UnsupportedPlatformError
from dpshm.shm import registry
from dpshm.shm.cpu import check_platform, platform_problem
from dpshm.shm.ring import SharedRing
from dpshm.shm.supervisor import Supervisor


@pytest.fixture
def aarch64(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.delenv(C.ENV_ALLOW_UNSAFE_PLATFORM, raising=False)


def test_this_host_is_supported():
    assert platform_problem() is None  # the test machines are x86-64
    check_platform()


def test_ring_create_and_attach_refuse_aarch64(aarch64, unique_name, monkeypatch):
    with pytest.raises(UnsupportedPlatformError) as info:
        SharedRing.create(unique_name, 2, 16)
    msg = str(info.value)
    assert "aarch64" in msg and "x86-64" in msg and C.ENV_ALLOW_UNSAFE_PLATFORM in msg
    assert isinstance(info.value, (DpshmError, RuntimeError))
    assert not Path(f"/dev/shm/dpshm_{unique_name}").exists()
    # a ring made on a safe host (here: with the override) cannot be attached either
    monkeypatch.setenv(C.ENV_ALLOW_UNSAFE_PLATFORM, "1")
    with SharedRing.create(unique_name, 2, 16) as ring:
        monkeypatch.delenv(C.ENV_ALLOW_UNSAFE_PLATFORM)
        with pytest.raises(UnsupportedPlatformError):
            SharedRing.attach(unique_name)
        monkeypatch.setenv(C.ENV_ALLOW_UNSAFE_PLATFORM, "1")  # the user accepts the risk
        with SharedRing.attach(unique_name) as reader:
            assert reader.n_channels == 2
        ring.unlink()


def test_32_bit_python_refused(monkeypatch):
    monkeypatch.delenv(C.ENV_ALLOW_UNSAFE_PLATFORM, raising=False)
    monkeypatch.setattr(sys, "maxsize", 2**31 - 1)
    assert "32-bit" in (platform_problem() or "")
    with pytest.raises(UnsupportedPlatformError):
        check_platform()


def test_supervisor_refuses_before_taking_the_namespace(aarch64, unique_name):
    cfg = C.load_config(None, env={}, overrides={"namespace": unique_name})
    with pytest.raises(UnsupportedPlatformError):
        Supervisor(cfg).start()
    assert not (registry.namespace_dir(unique_name, create=False) / registry.LOCK_FILE).exists()


def test_dpshm_up_refuses_in_one_line(aarch64, unique_name, capsys):
    rc = main(["up", "--namespace", unique_name, "--duration", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err, err
    assert err.startswith("dpshm up: error: ") and "aarch64" in err and "x86-64" in err
