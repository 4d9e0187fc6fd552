"""Fixtures of the viewer tests."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

from dpshm import registry


@pytest.fixture
def ns(unique_name, monkeypatch):
    """The test's own namespace; what a killed supervisor left in it is removed after."""
    monkeypatch.setenv("DPSHM_NAMESPACE", unique_name)
    yield unique_name
    for seg in os.listdir("/dev/shm"):
        if seg.startswith(f"dpshm_{unique_name}."):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/{seg}")
    shutil.rmtree(registry.namespace_dir(unique_name, create=False), ignore_errors=True)
