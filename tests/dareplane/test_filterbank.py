"""dpshm.FilterBank against dareplane-utils' FilterBank on the same random input.

Settings are those of the three modules that use it: dp-multiband-regression
(six bands 5-70 Hz, order 8, 4 channels, 2 s buffer, ``signal`` and the
commented-out ``abs_ma`` with a 0.1 s lookback), dp-erp-classifier (one band
[4, 15], 5 s buffer) and thijor/dp-cvep-decoder (one band [2, 30] online with a
5 s buffer, and a whole recording at once in training). Tolerance: the outputs
are compared with ``assert_array_equal`` (bitwise: same scipy calls in the same
order, float32 storage on both sides); the chunking and ``n_new`` bookkeeping
follow each module's loop.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, import_original

pytest.importorskip("scipy")
pytest.importorskip("dareplane_utils")

from dpshm import FilterBank
from dpshm.errors import DpshmError

Original = import_original("dareplane_utils.signal_processing.filtering").FilterBank

MULTIBAND = {
    "theta": [5, 8],
    "alpha": [8, 13],
    "beta_low": [13, 20],
    "beta_high": [20, 30],
    "gamma_low": [30, 45],
    "gamma_high": [55, 70],
}
SETTINGS = {
    "multiband-signal": dict(
        bands=MULTIBAND, sfreq=1000, n_in_channels=4, output="signal", filter_buffer_s=2,
        n_lookback=100,
    ),
    "multiband-abs_ma": dict(
        bands=MULTIBAND, sfreq=1000, n_in_channels=4, output="abs_ma", filter_buffer_s=2,
        n_lookback=100,
    ),
    "erp": dict(bands={"b1": [4, 15]}, sfreq=500, n_in_channels=8, filter_buffer_s=5),
    "cvep-online": dict(
        bands={"band": [2, 30]}, sfreq=250, output="signal", n_in_channels=8, filter_buffer_s=5.0
    ),
}  # fmt: skip


def _pair(kw: dict) -> tuple[FilterBank, object]:
    return FilterBank(**kw), Original(**kw)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_same_output_chunk_by_chunk(name: str) -> None:
    kw = SETTINGS[name]
    ours, theirs = _pair(kw)
    rng = np.random.default_rng(7)
    n = int(kw["sfreq"] * 7)  # longer than the buffer: the ring wraps
    x = (rng.standard_normal((n, kw["n_in_channels"])) * 20).astype(np.float32)
    t = np.arange(n) / kw["sfreq"]
    i = 0
    while i < n:
        k = int(rng.integers(1, 60))  # LSL chunks of varying size
        for fb in (ours, theirs):
            fb.filter(x[i : i + k], t[i : i + k])
        i += k
        if rng.random() < 0.3:  # read now and then, reset n_new as the modules do
            np.testing.assert_array_equal(ours.get_data(), theirs.get_data())
            np.testing.assert_array_equal(
                ours.ring_buffer.unfold_buffer_t()[-ours.n_new :],
                theirs.ring_buffer.unfold_buffer_t()[-theirs.n_new :],
            )
            ours.n_new = theirs.n_new = 0
    for k in ours.zis:
        np.testing.assert_array_equal(ours.zis[k], theirs.zis[k])
        np.testing.assert_array_equal(ours.sos[k], theirs.sos[k])
    assert ours.ring_buffer.buffer.shape == theirs.ring_buffer.buffer.shape
    assert ours.ring_buffer.buffer.dtype == theirs.ring_buffer.buffer.dtype
    assert (ours.ch_names, list(ours.zis), ours.bands) == (
        theirs.ch_names,
        list(theirs.zis),
        theirs.bands,
    )


def test_erp_pattern_partial_n_new() -> None:
    """dp-erp-classifier lowers n_new by the samples it consumed, then reads again."""
    ours, theirs = _pair(SETTINGS["erp"])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 8)).astype(np.float32)
    t = np.arange(3000) / 500
    for fb in (ours, theirs):
        fb.filter(x, t)
        fb.n_new -= 1234
    np.testing.assert_array_equal(ours.get_data(), theirs.get_data())
    for fb in (ours, theirs):
        fb.n_new = 0  # the original's slicing then returns the whole window read
    np.testing.assert_array_equal(ours.get_data(), theirs.get_data())


def test_cvep_training_whole_recording() -> None:
    """thijor/dp-cvep-decoder's training: one call with the whole recording."""
    rng = np.random.default_rng(5)
    sfreq = 120
    x = rng.standard_normal((sfreq * 31 + 7, 6))
    kw = dict(
        bands={"band": (2.0, 30.0)},
        sfreq=sfreq,
        output="signal",
        n_in_channels=x.shape[1],
        filter_buffer_s=np.ceil(x.shape[0] / sfreq),
    )
    ours, theirs = _pair(kw)
    for fb in (ours, theirs):
        fb.filter(x, np.arange(x.shape[0]) / sfreq)
    np.testing.assert_array_equal(ours.get_data()[:, :, 0], theirs.get_data()[:, :, 0])


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="only one is 'butter'"):
        FilterBank({"a": [1, 2]}, filter_type="cheby")
    with pytest.raises(ValueError, match="choose one of"):
        FilterBank({"a": [1, 2]}, output="abs")
    with pytest.raises(ValueError, match=r"sfreq/2 = 50\.0 Hz"):
        FilterBank({"a": [10, 60]}, sfreq=100)
    assert FilterBank({"a": [1, 2]}, 4, "butter").filter_type == "butter"
    assert FilterBank({"a": [1, 2]}, type="butter").filter_type == "butter"  # 0.0.21's name


def test_missing_scipy_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "from dpshm.errors import DpshmError\n"
        "try:\n"
        "    from dpshm import FilterBank\n"
        "except ImportError as e:\n"
        "    assert isinstance(e, DpshmError), type(e)\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "pip install 'dpshm[filters]'" in out and DpshmError.__name__ == "DpshmError"


@pytest.mark.parametrize("kernel", [True, False])
def test_sosfilt_inplace_equals_sosfilt(kernel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live filter's sosfilt without argument handling: scipy's numbers, both paths."""
    import scipy.signal

    from dpshm.dareplane import filterbank

    assert filterbank._kernel_ok()  # this scipy's private kernel passes the check
    if not kernel:  # the fallback through the public function (another scipy layout)
        monkeypatch.setattr(filterbank, "_kernel_checked", False)
    sos = scipy.signal.butter(4, (1.0, 40.0), btype="bandpass", output="sos", fs=500.0)
    x = np.random.default_rng(3).standard_normal((5, 300))
    want, want_zi = scipy.signal.sosfilt(sos, x, axis=-1, zi=np.zeros((sos.shape[0], 5, 2)))
    zi = np.zeros((5, sos.shape[0], 2))
    parts = []
    for a, b in ((0, 1), (1, 120), (120, 300)):
        piece = np.ascontiguousarray(x[:, a:b])
        filterbank.sosfilt_inplace(sos, piece, zi)
        parts.append(piece)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), want)
    np.testing.assert_array_equal(zi, want_zi.transpose(1, 0, 2))
