"""Fixtures of the data-path tests."""

from __future__ import annotations

import shutil

import pytest

from dpshm.shm import registry


@pytest.fixture
def ns(unique_name: str, monkeypatch: pytest.MonkeyPatch):
    """The test's own supervisor namespace (also ``$DPSHM_NAMESPACE``); its runtime
    directory is removed afterwards."""
    monkeypatch.setenv("DPSHM_NAMESPACE", unique_name)
    yield unique_name
    shutil.rmtree(registry.namespace_dir(unique_name, create=False), ignore_errors=True)
