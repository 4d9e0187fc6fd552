"""``FilterBank``: causal band-pass filters over a stream, as dareplane-utils' one.

Drop-in for ``dareplane_utils.signal_processing.filtering.FilterBank`` (same
constructor, attributes and methods, the same numbers on the same input), so a
module that uses it no longer needs dareplane-utils, whose import reconfigures
logging. Needs scipy: ``pip install 'dpshm[filters]'``.

Each band is a Butterworth band-pass in second-order sections
(``scipy.signal.butter(order, band, btype="bandpass", output="sos", fs=sfreq)``)
run by ``sosfilt`` with its state kept between calls (initial state
``sosfilt_zi`` per channel, as the original). Results go into a
:class:`~dpshm.dareplane.ringbuffer.RingBuffer` of shape
``(sfreq * filter_buffer_s, n_in_channels, n_bands)`` (float32, as the
original's); :meth:`FilterBank.get_data` returns the newest ``n_new`` rows after
the output transform.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from dpshm.dareplane.ringbuffer import RingBuffer
from dpshm.errors import MissingDependencyError

try:  # dpshm's one entry point of scipy (the filter worker takes scipy.signal from here)
    import scipy.signal as scipy_signal
    from scipy.ndimage import convolve
    from scipy.signal import butter, sosfilt, sosfilt_zi
except ImportError as _err:  # pragma: no cover - exercised in a subprocess test
    raise MissingDependencyError(
        f"dpshm's filters (FilterBank, the filter worker) need scipy, which cannot be "
        f"imported ({_err}); install it with: pip install 'dpshm[filters]'"
    ) from _err

try:  # the compiled loop behind sosfilt (private: checked against sosfilt before use)
    from scipy.signal._sosfilt import _sosfilt as _scipy_kernel
except ImportError:  # pragma: no cover - another scipy layout: the public sosfilt is used
    _scipy_kernel = None

__all__ = ["OUTPUTS", "FilterBank", "abs_moving_average", "scipy_signal", "sosfilt_inplace"]

_kernel_checked: bool | None = None  # None: not checked yet


def _kernel_ok() -> bool:
    """Whether scipy's private kernel gives exactly what the public ``sosfilt`` gives."""
    global _kernel_checked
    if _kernel_checked is None:
        ok = False
        if _scipy_kernel is not None:
            rng = np.random.default_rng(0)
            sos = butter(4, (0.1, 0.3), btype="bandpass", output="sos")
            x = rng.standard_normal((3, 17))
            zi = rng.standard_normal((sos.shape[0], 3, 2))
            want, want_zi = sosfilt(sos, x, axis=-1, zi=zi)
            got, got_zi = x.copy(), np.ascontiguousarray(zi.transpose(1, 0, 2))
            try:
                _scipy_kernel(sos, got, got_zi)
                ok = np.array_equal(got, want) and np.array_equal(
                    got_zi, want_zi.transpose(1, 0, 2)
                )
            except Exception:  # any failure means: use the public function
                ok = False
        _kernel_checked = ok
    return _kernel_checked


def sosfilt_inplace(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> None:
    """``scipy.signal.sosfilt`` along the last axis, in place, without its per-call checks.

    The same numbers as ``x[...], zi' = sosfilt(sos, x, axis=-1, zi=...)``
    (scipy's compiled loop is called directly when it passes a check against
    the public function once per process, else the public function runs): a
    live filter calls it once per 10 ms chunk, where sosfilt's argument
    handling costs several times the filtering.

    Parameters
    ----------
    sos : np.ndarray
        ``(n_sections, 6)`` float64.
    x : np.ndarray
        ``(n_signals, n_samples)`` float64, C-contiguous: overwritten by the output.
    zi : np.ndarray
        ``(n_signals, n_sections, 2)`` float64, C-contiguous: the state, updated.
        (sosfilt's own ``zi`` layout for ``axis=-1`` is ``(n_sections, n_signals, 2)``.)
    """
    if _kernel_ok():
        _scipy_kernel(sos, x, zi)
        return
    y, z = sosfilt(sos, x, axis=-1, zi=zi.transpose(1, 0, 2))
    x[...] = y
    zi[...] = z.transpose(1, 0, 2)


def abs_moving_average(data: np.ndarray, n_lookback: int = 5) -> np.ndarray:
    """Moving average of ``|data|`` over ``n_lookback`` rows (the original's ``abs_ma``).

    Convolves along every axis with a kernel of ``n_lookback`` rows (zeros
    outside), then cuts ``(n_lookback - 1) // 2`` rows at the start and
    ``n_lookback // 2`` at the end, exactly as dareplane-utils does.
    """
    kernel = np.ones((n_lookback, *([1] * (data.ndim - 1)))) / n_lookback
    ma = convolve(np.abs(data), kernel, mode="constant", cval=0.0)
    return ma[(n_lookback - 1) // 2 : -(n_lookback // 2)]


def _identity(data: np.ndarray, *args: Any) -> np.ndarray:
    return data


def _square(data: np.ndarray) -> np.ndarray:
    return data**2


#: Output transforms by name: ``"signal"`` (none), ``"abs_ma"``, ``"square"``.
OUTPUTS = ("signal", "abs_ma", "square")


class FilterBank:
    """Band-pass filter a multi-channel signal into several bands, chunk by chunk.

    Parameters
    ----------
    bands : dict[str, sequence of two floats]
        Band name -> ``(low_hz, high_hz)``, e.g. ``{"alpha": [8, 12]}``.
    order : int
        Butterworth order (8).
    filter_type : str
        Only ``"butter"``. (dareplane-utils 0.0.21 called it ``type``; that
        keyword is accepted too.)
    sfreq : float
        Sampling rate of the input in Hz.
    output : str
        ``"signal"`` (filtered signal), ``"abs_ma"`` (moving average of its
        absolute value over ``n_lookback`` samples) or ``"square"``.
    n_in_channels : int
        Channels of the input (columns of ``data``).
    filter_buffer_s : float
        Seconds of filtered output kept (``int(sfreq * filter_buffer_s)`` rows).
    n_lookback : int
        Window of ``"abs_ma"``, and the extra history :meth:`get_data` reads.

    Attributes
    ----------
    sos, zis : dict
        Per band: the filter's second-order sections and its state,
        ``(n_sections, n_in_channels, 2)``.
    ring_buffer : RingBuffer
        Filtered samples, shape ``(rows, n_in_channels, n_bands)``, float32.
    n_new : int
        Samples filtered since the user last reset it (the user resets it, as
        with the original).
    ch_names : list of str
        ``ch_0 ... ch_<n-1>``.

    Raises
    ------
    ValueError
        Unknown ``filter_type`` or ``output``, a band that is not
        ``0 < low < high < sfreq / 2``, or a buffer of less than one row.
    """

    def __init__(
        self,
        bands: Mapping[str, Sequence[float]],
        order: int = 8,
        filter_type: str = "butter",
        sfreq: float = 1000,
        output: str = "signal",
        n_in_channels: int = 1,
        filter_buffer_s: float = 1,
        n_lookback: int = 5,
        *,
        type: str | None = None,  # dareplane-utils 0.0.21 called filter_type so
    ) -> None:
        if type is not None:
            filter_type = type
        if filter_type != "butter":
            raise ValueError(f"Unknown filter type {filter_type!r}; the only one is 'butter'")
        if output not in OUTPUTS:
            raise ValueError(f"Unknown output {output!r}; choose one of {list(OUTPUTS)}")
        if not bands:
            raise ValueError("bands is empty; give e.g. bands={'alpha': [8, 12]}")
        for name, band in bands.items():
            if len(band) != 2 or not 0 < band[0] < band[1] < sfreq / 2:
                raise ValueError(
                    f"band {name!r} = {list(band)!r} is not [low, high] with "
                    f"0 < low < high < sfreq/2 = {sfreq / 2} Hz"
                )
        rows = int(sfreq * filter_buffer_s)
        if rows < 1:
            raise ValueError(
                f"sfreq * filter_buffer_s = {sfreq} * {filter_buffer_s} is less than one "
                "sample; raise filter_buffer_s"
            )
        self.sfreq = sfreq
        self.output = output
        self.n_in_channels = n_in_channels
        self.ch_names = [f"ch_{i}" for i in range(n_in_channels)]
        self.bands = bands
        self.n_lookback = n_lookback
        self.filter_type = filter_type
        self.sos = {
            name: butter(order, (band[0], band[1]), btype="bandpass", output="sos", fs=sfreq)
            for name, band in bands.items()
        }
        # initial state per section, repeated for every channel: (n_sections, n_ch, 2)
        self.zis = {
            name: np.repeat(sosfilt_zi(sos)[:, np.newaxis, :], n_in_channels, axis=1)
            for name, sos in self.sos.items()
        }
        self.ring_buffer = RingBuffer((rows, n_in_channels, len(bands)))
        # the original's attribute name, kept for code that reads it
        self.output_posprocessing_map: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "abs_ma": partial(abs_moving_average, n_lookback=n_lookback),
            "signal": _identity,
            "square": _square,
        }
        self.output_transform = self.output_posprocessing_map[output]
        self.n_new = 0

    def filter(self, data: np.ndarray, times: np.ndarray) -> None:
        """Filter a chunk and append it to :attr:`ring_buffer`; ``n_new`` grows by its length.

        Parameters
        ----------
        data : array-like
            ``(n_samples, n_in_channels)``, oldest first.
        times : array-like
            ``n_samples`` timestamps.
        """
        x = np.asarray(data).T  # (n_ch, n): sosfilt runs along the last axis
        out = np.empty((len(self.sos), *x.shape))
        for i, (name, sos) in enumerate(self.sos.items()):
            out[i], self.zis[name] = sosfilt(sos, x, zi=self.zis[name])
        self.ring_buffer.add_samples(out.T, times)  # (n, n_ch, n_bands)
        self.n_new += x.shape[-1]

    def get_data(self) -> np.ndarray:
        """The newest ``n_new`` filtered rows after the output transform.

        ``(n_new, n_in_channels, n_bands)``; ``n_lookback`` older rows are read
        too so that ``"abs_ma"`` has its history. With ``n_new == 0`` the result
        is the whole window read (the original's slicing, kept).
        """
        data = self.ring_buffer.unfold_buffer()[-(self.n_new + self.n_lookback) :, ...]
        return self.output_transform(data)[-self.n_new :, ...]
