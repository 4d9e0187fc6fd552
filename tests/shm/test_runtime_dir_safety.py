"""A second local user cannot hijack the runtime directory or feed forged rings.

The runtime directory (``/tmp/dpshm-<uid>`` without ``XDG_RUNTIME_DIR``) must be
created 0700 by its user; one that exists owned by someone else, as a symlink or
writable by others is refused, files in it are never followed through symlinks,
and a consumer only attaches to rings its own uid created. The hostile side is
played by a real second uid (``nobody``) in a forked child where the tests run
as root (they skip otherwise), or set up with ``os.chown``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import OTHER_UID, ROOT, as_other_user

from dpshm.errors import UnsafeOwnershipError
from dpshm.shm import registry
from dpshm.shm.ring import SharedRing
from dpshm.shm.view import SharedStreamView

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="chown / a second uid needs root")


@pytest.fixture
def shared_tmp(monkeypatch, tmp_path):  # tmp_path first: made before tempdir moves
    """A world-writable sticky directory like /tmp, used as the temporary directory."""
    path = Path(tempfile.mkdtemp(prefix="dpshm-shared-", dir="/tmp"))
    os.chmod(path, 0o1777)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _mine(shared: Path) -> Path:
    return shared / f"dpshm-{os.getuid()}"


def _up(shared: Path, ns: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env.update(TMPDIR=str(shared), DPSHM_NAMESPACE=ns, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "dpshm", "up", "-q", "--stream", "none", "--duration", "2", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _segments(ns: str) -> list[str]:
    return [s for s in os.listdir("/dev/shm") if s.startswith(f"dpshm_{ns}.")]


def test_created_0700_by_its_user(shared_tmp):
    path = registry.namespace_dir("safe_a")
    for d in (path, path.parent):
        st = os.lstat(d)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
        assert stat.S_IMODE(st.st_mode) == 0o700
    assert path.parent == _mine(shared_tmp)


@needs_root
def test_directory_planted_by_another_user_is_refused(shared_tmp, unique_name, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.chmod(tmp_path, 0o755)  # the attacker can name the victim's file, not write it
    mine = _mine(shared_tmp)

    def plant() -> None:  # as uid 65534: what another user can do in /tmp
        ns = mine / unique_name
        os.makedirs(ns, mode=0o777)
        os.chmod(mine, 0o777)
        os.chmod(ns, 0o777)
        os.symlink(victim, ns / "supervisor.lock")
        (ns / "registry.json").write_text('{"version": 1, "pid": 1, "streams": {}}')

    as_other_user(plant)
    assert os.lstat(mine).st_uid == OTHER_UID
    res = _up(shared_tmp, unique_name)
    assert res.returncode == 1, res.stderr
    err = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert len(err) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"refusing to use '{mine}'" in err[0] and f"owned by uid {OTHER_UID}" in err[0]
    assert "rm -rf" in err[0]
    assert victim.read_text() == "precious\n"  # the symlinked lock was never opened
    assert _segments(unique_name) == []
    # a consumer refuses the forged registry as well, instead of following it
    with pytest.raises(UnsafeOwnershipError, match=f"uid {OTHER_UID}"):
        registry.read_registry(unique_name)
    with pytest.raises(UnsafeOwnershipError):
        SharedStreamView("eeg", namespace=unique_name)


def test_symlinked_directory_is_refused(shared_tmp, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    os.symlink(target, _mine(shared_tmp))
    with pytest.raises(UnsafeOwnershipError, match="it is a symlink") as info:
        registry.namespace_dir("safe_b")
    assert str(_mine(shared_tmp)) in str(info.value)
    assert list(target.iterdir()) == []


def test_group_or_world_writable_directory_is_refused(shared_tmp):
    mine = _mine(shared_tmp)
    mine.mkdir()
    os.chmod(mine, 0o777)
    with pytest.raises(UnsafeOwnershipError, match=r"mode 0777") as info:
        registry.namespace_dir("safe_c")
    assert f"chmod go-w {mine}" in str(info.value)
    os.chmod(mine, 0o700)
    assert registry.namespace_dir("safe_c").is_dir()


@needs_root
def test_xdg_runtime_dir_itself_is_checked(tmp_path, monkeypatch):
    xdg = tmp_path / "run-user"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert registry.namespace_dir("safe_d") == xdg / "dpshm" / "safe_d"
    os.chmod(xdg, 0o777)
    with pytest.raises(UnsafeOwnershipError, match="writable by group or others"):
        registry.runtime_dir()
    os.chmod(xdg, 0o700)
    os.chown(xdg, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeOwnershipError, match=f"owned by uid {OTHER_UID}") as info:
        registry.runtime_dir()
    assert "Set XDG_RUNTIME_DIR to a directory of yours" in str(info.value)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    with pytest.raises(UnsafeOwnershipError, match="does not exist"):
        registry.runtime_dir()


def test_symlinked_lock_is_not_followed(shared_tmp, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    ns = registry.namespace_dir("safe_e")
    os.symlink(victim, ns / registry.LOCK_FILE)
    with pytest.raises(UnsafeOwnershipError, match="symlink"):
        registry.SupervisorLock("safe_e")
    assert victim.read_text() == "precious\n"


@needs_root
def test_registry_file_of_another_user_or_symlinked_is_refused(shared_tmp, tmp_path):
    ns = registry.namespace_dir("safe_f")
    reg = ns / registry.REGISTRY_FILE
    reg.write_text('{"version": 1, "pid": 1, "streams": {}}')
    os.chown(reg, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeOwnershipError, match=f"owner uid {OTHER_UID}"):
        registry.read_registry_raw("safe_f")
    reg.unlink()
    forged = tmp_path / "forged.json"
    forged.write_text('{"version": 1, "pid": 1, "streams": {}}')
    os.symlink(forged, reg)
    with pytest.raises(UnsafeOwnershipError, match="symlink"):
        registry.read_registry_raw("safe_f")
    # our own writer replaces the symlink itself (atomic rename), never its target
    registry.write_registry(registry.Registry.for_this_process("safe_f"))
    assert not reg.is_symlink() and forged.read_text() == '{"version": 1, "pid": 1, "streams": {}}'


@needs_root
def test_ring_created_by_another_user_is_not_attached(unique_name):
    def create() -> str:  # as uid 65534: a ring under a name a consumer might ask for
        ring = SharedRing.create(unique_name, 2, 64, "float32", srate=100.0)
        ring.write(np.ones((8, 2), np.float32), np.arange(8.0))
        return ring._seg  # left behind on purpose: the child exits without unlinking

    seg = as_other_user(create)
    try:
        assert os.stat(f"/dev/shm/{seg}").st_uid == OTHER_UID
        with pytest.raises(UnsafeOwnershipError, match=f"created by uid {OTHER_UID}") as info:
            SharedRing.attach(unique_name)
        assert seg in str(info.value)
        with pytest.raises(UnsafeOwnershipError):
            SharedStreamView(unique_name)
    finally:
        os.unlink(f"/dev/shm/{seg}")


@needs_root
def test_chowned_ring_is_not_attached_and_not_swept(unique_name):
    ring = SharedRing.create(unique_name, 1, 32, "float32", srate=10.0)
    try:
        os.chown(f"/dev/shm/{ring._seg}", OTHER_UID, OTHER_UID)
        with pytest.raises(UnsafeOwnershipError):
            SharedRing.attach(unique_name)
    finally:
        os.chown(f"/dev/shm/{ring._seg}", 0, 0)
        ring.close()
        ring.unlink()


@needs_root
def test_ring_name_taken_by_another_user_does_not_stall_the_stream(unique_name, caplog):
    """Another uid that creates a feed's segment name first cannot keep the stream out."""
    import threading

    from dpshm.config import StreamSelector
    from dpshm.lsl import StreamSpec
    from dpshm.shm.feed import Feed, FeedEnv

    env = FeedEnv(
        namespace=unique_name, run_id="abc123", capacity_for=lambda sel, srate: 256,
        string_width=16, resolve_interval_s=1.0, inlet_buflen=1,
        stop_event=threading.Event(), on_write=lambda *a: None, on_change=lambda: None,
    )  # fmt: skip
    spec = StreamSpec("eeg", "EEG", "src", 2, 100.0, "float32", ("a", "b"))
    feed = Feed(env, "k1", spec, StreamSelector(name="eeg"), 1)
    planted = f"{unique_name}.k1.abc123.g1"  # the name the feed tries first
    seg = as_other_user(lambda: SharedRing.create(planted, 1, 8, "float32")._seg)
    try:
        feed._make_ring(spec)
        ring = feed.ring
        try:
            assert ring.name != planted and ring.name.endswith(".g1")
            assert os.stat(f"/dev/shm/dpshm_{ring.name}").st_uid == os.getuid()
            assert SharedRing.attach(ring.name).n_channels == 2  # a usable ring of ours
            assert planted in caplog.text and "not this supervisor's" in caplog.text
        finally:
            ring.close()
            ring.unlink()
    finally:
        os.unlink(f"/dev/shm/{seg}")
