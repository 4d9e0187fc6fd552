"""Shared helpers for tests that need real loopback LSL outlets.

Use :class:`OutletFactory` (a context manager) so every outlet is closed even when
the test fails::

    @pytest.fixture
    def outlets(unique_name):
        with OutletFactory(unique_name) as f:
            yield f

    def test_x(outlets):
        out = outlets.make(n_channels=4, srate=100)   # unique name and source_id
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from dpshm.lsl import Outlet


class OutletFactory:
    """Creates outlets with unique names/source_ids derived from ``prefix``; closes all."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._count = itertools.count()
        self._outlets: list[Outlet] = []

    def make(
        self,
        name: str | None = None,
        type: str = "EEG",
        n_channels: int = 2,
        srate: float = 100.0,
        channel_format: str = "float32",
        source_id: str | None = None,
        channel_names: Sequence[str] | None = None,
    ) -> Outlet:
        """A new outlet; name and source_id default to unique values."""
        i = next(self._count)
        name = name or f"{self.prefix}_{i}"
        source_id = source_id if source_id is not None else f"{self.prefix}_src{i}"
        out = Outlet(
            name,
            type,
            n_channels,
            srate,
            channel_format,
            source_id,
            channel_names=channel_names,
        )
        self._outlets.append(out)
        return out

    def close(self) -> None:
        for out in self._outlets:
            out.close()
        self._outlets.clear()

    def __enter__(self) -> OutletFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ramp(start: int, n: int, n_channels: int, dtype: object = np.float32) -> np.ndarray:
    """Rows ``start..start+n-1``; channel ``c`` of row ``i`` holds ``i * 10 + c``
    (wrapped into the dtype's range for small integer types)."""
    i = np.arange(start, start + n, dtype=np.int64)[:, None]
    c = np.arange(n_channels, dtype=np.int64)[None, :]
    values = i * 10 + c
    dt = np.dtype(dtype)
    if dt.kind == "i" and dt.itemsize < 8:
        info = np.iinfo(dt)
        values = values % (int(info.max) + 1)
    return values.astype(dt)
