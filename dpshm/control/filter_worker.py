"""The filter worker that ships with dpshm: shared stream in, filtered stream out.

It reads one shared stream, applies a band-pass and/or notch filter (second-order
sections, :func:`scipy.signal.sosfilt`, the filter state carried from chunk to
chunk so the output equals the filter run once over the whole signal) or the
Dareplane-compatible :class:`~dpshm.dareplane.filterbank.FilterBank` (several
bands at once), and publishes the result as a new stream
(:func:`dpshm.publish_stream`), chunk by chunk, with the input's timestamps.
Readers open the output by name like any shared stream, with the same wake-ups
and loss counts.

Needs scipy: ``pip install 'dpshm[filters]'``.

Declare it in the supervisor's configuration and start it over TCP::

    [workers.bandpass]
    target = "dpshm.control.filter_worker:run"
    mode = "process"
    kwargs = { out = "eeg_bp", band = [1.0, 40.0], notch = 50.0, order = 4 }

    START_WORKER|{"worker": "bandpass", "streams": ["eeg"]}

``kwargs``: ``out`` (output name, default ``<input>_filtered``), ``band``
(``[low, high]`` Hz; ``low = 0`` low-pass, ``high = 0`` high-pass), ``notch``
(Hz; its quality factor ``notch_q``, default 30), ``order`` (Butterworth order,
default 4), ``lsl`` (also offer the output as an LSL outlet), ``stream`` (the
input when ``START_WORKER`` names no stream).

With ``bands`` (a table ``name -> [low, high]`` Hz) the worker runs a
:class:`~dpshm.dareplane.filterbank.FilterBank` instead (``band``/``notch``
must then be absent); ``order`` defaults to 8 as the FilterBank's, ``output``
(``"signal"``, ``"abs_ma"``, ``"square"``) and ``n_lookback`` (5) are passed
on. The output has ``n_channels * n_bands`` channels, channel-major: column
``c * n_bands + b`` is input channel ``c`` in band ``b`` (bands in the order
given), labelled ``"<channel>_<band>"``;
``data.reshape(len(data), n_channels, n_bands)`` gives the FilterBank's
``get_data()`` layout back::

    [workers.bands]
    target = "dpshm.control.filter_worker:run"
    mode = "process"
    kwargs = { out = "eeg_bands", bands = { alpha = [8.0, 12.0], beta = [13.0, 30.0] } }
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpshm._logging import library_logger
from dpshm.errors import ConfigError

log = library_logger(__name__)

WAIT_S = 0.5  # longest block in one wait: bounds the reaction to the stop event


def _signal() -> Any:
    """``scipy.signal``, through dpshm's one entry point of scipy.

    Raises :class:`~dpshm.errors.MissingDependencyError` (naming
    ``pip install 'dpshm[filters]'``) when scipy is not installed.
    """
    from dpshm.dareplane.filterbank import scipy_signal

    return scipy_signal


def design(
    srate: float,
    band: Sequence[float] | None = None,
    notch: float | None = None,
    order: int = 4,
    notch_q: float = 30.0,
) -> np.ndarray:
    """Second-order sections of a Butterworth band-pass (or low/high-pass) and a notch.

    Parameters
    ----------
    srate : float
        Sampling rate of the input (Hz, > 0).
    band : (low, high), optional
        Pass band in Hz; ``low = 0`` makes a low-pass, ``high = 0`` a high-pass.
    notch : float, optional
        Frequency (Hz) of an IIR notch (e.g. 50 or 60 Hz line noise).
    order : int
        Butterworth order.
    notch_q : float
        Quality factor of the notch.

    Raises
    ------
    ConfigError
        An irregular input, no filter asked for, or frequencies outside (0, srate/2).
    """
    sig = _signal()
    if not srate > 0:
        raise ConfigError("the filter worker needs a regular stream (srate > 0); got srate 0")
    nyq = srate / 2.0
    sections = []
    if band is not None:
        low, high = (float(f) for f in band)
        if not (0 <= low < nyq and 0 <= high < nyq and (high == 0 or low < high)):
            raise ConfigError(
                f"band {list(band)} Hz does not fit a stream at {srate:g} Hz: use "
                f"0 <= low < high < {nyq:g} (low = 0: low-pass, high = 0: high-pass)"
            )
        if low > 0 and high > 0:
            sections.append(sig.butter(order, [low, high], "bandpass", fs=srate, output="sos"))
        elif high > 0:
            sections.append(sig.butter(order, high, "lowpass", fs=srate, output="sos"))
        elif low > 0:
            sections.append(sig.butter(order, low, "highpass", fs=srate, output="sos"))
    if notch is not None:
        if not 0 < float(notch) < nyq:
            raise ConfigError(f"notch {notch} Hz must lie in (0, {nyq:g}) for {srate:g} Hz")
        b, a = sig.iirnotch(float(notch), float(notch_q), fs=srate)
        sections.append(sig.tf2sos(b, a))
    if not sections:
        raise ConfigError("the filter worker has nothing to do: give band=[low, high] or notch")
    return np.concatenate(sections, axis=0)


class LiveFilter:
    """Filter chunk by chunk, the state carried between chunks (zero initial state).

    Feeding a signal in chunks gives the same output as
    ``scipy.signal.sosfilt(sos, signal, axis=0)`` over the whole signal (the
    same numbers: :func:`~dpshm.dareplane.filterbank.sosfilt_inplace` runs
    sosfilt's compiled loop without its per-call argument handling, which
    costs several times the filtering of a 10 ms chunk).

    Parameters
    ----------
    sos : np.ndarray, shape (n_sections, 6)
    n_channels : int
    """

    def __init__(self, sos: np.ndarray, n_channels: int):
        from dpshm.dareplane.filterbank import sosfilt_inplace

        self._sosfilt = sosfilt_inplace
        self.sos = np.ascontiguousarray(sos, dtype=np.float64)
        self.n_channels = int(n_channels)
        self.zi = np.zeros((self.n_channels, self.sos.shape[0], 2))  # the kernel's layout

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Filter one chunk ``(k, n_channels)``; returns float64 ``(k, n_channels)``."""
        if x.ndim != 2 or x.shape[1] != self.n_channels:
            raise ValueError(
                f"the filter was made for {self.n_channels} channels; got a chunk of shape "
                f"{x.shape}"
            )
        y = np.empty((self.n_channels, len(x)))  # one channel per row: the kernel's layout
        y[...] = x.T
        self._sosfilt(self.sos, y, self.zi)
        return y.T

    def float32(self, x: np.ndarray) -> np.ndarray:
        """:meth:`__call__` rounded to a C-contiguous float32 array (what a ring stores)."""
        return self(x).astype(np.float32, order="C")


BANK_PIECE = 256  # rows a FilterBank takes per call (its buffer holds them + n_lookback)


class BankFilter:
    """A :class:`~dpshm.dareplane.filterbank.FilterBank` fed chunk by chunk, flattened.

    Each chunk goes through ``FilterBank.filter`` and ``get_data`` (in pieces
    of at most :data:`BANK_PIECE` rows, so its buffer stays small), exactly as
    a Dareplane module calls it; the ``(k, n_channels, n_bands)`` result is
    returned as ``(k, n_channels * n_bands)`` float32, channel-major.

    Parameters
    ----------
    bands : mapping
        Band name -> ``(low_hz, high_hz)``.
    srate : float
    n_channels : int
    order, output, n_lookback
        Passed to the FilterBank.

    Raises
    ------
    ConfigError
        Settings the FilterBank refuses (the message names them).
    """

    def __init__(
        self,
        bands: Mapping[str, Sequence[float]],
        srate: float,
        n_channels: int,
        order: int = 8,
        output: str = "signal",
        n_lookback: int = 5,
    ):
        from dpshm.dareplane.filterbank import FilterBank

        if not isinstance(bands, Mapping) or not bands:
            raise ConfigError(
                f"bands must be a table of name -> [low, high] Hz, e.g. bands = "
                f"{{ alpha = [8.0, 12.0] }}; got {bands!r}"
            )
        if not (isinstance(n_lookback, int) and 1 <= n_lookback <= BANK_PIECE):
            raise ConfigError(
                f"n_lookback must be an integer in [1, {BANK_PIECE}]; got {n_lookback!r}"
            )
        rows = BANK_PIECE + n_lookback
        try:
            self.bank = FilterBank(
                {str(k): [float(f) for f in v] for k, v in bands.items()},
                order=order,
                sfreq=srate,
                output=output,
                n_in_channels=n_channels,
                filter_buffer_s=(rows + 0.5) / srate,  # exactly ``rows`` rows
                n_lookback=n_lookback,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"the filter worker's FilterBank: {exc}") from None
        self.band_names = list(self.bank.bands)
        self.n_channels = int(n_channels)
        self.n_out = self.n_channels * len(self.band_names)

    def __call__(self, x: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Filter one chunk ``(k, n_channels)``; returns float32 ``(k, n_channels * n_bands)``."""
        bank, k = self.bank, len(x)
        out = np.empty((k, self.n_out), np.float32)
        for a in range(0, k, BANK_PIECE):
            b = min(a + BANK_PIECE, k)
            bank.filter(x[a:b], ts[a:b])
            out[a:b] = bank.get_data().reshape(b - a, self.n_out)
            bank.n_new = 0
        return out


@dataclass(frozen=True)
class _Stage:
    """What :func:`filter_stream` runs: ``(x, ts) -> float32 rows``, and how to describe it."""

    filt: Callable[..., np.ndarray]
    channel_names: list[str]
    what: str
    meta: dict[str, Any]


def _stage(
    srate: float,
    channel_names: Sequence[str],
    band: Sequence[float] | None,
    notch: float | None,
    order: int | None,
    notch_q: float,
    bands: Mapping[str, Sequence[float]] | None,
    output: str,
    n_lookback: int,
) -> _Stage:
    n = len(channel_names)
    if bands is not None:
        if band is not None or notch is not None:
            raise ConfigError(
                "the filter worker runs either a band-pass/notch (band, notch) or a "
                "FilterBank (bands); give one of them"
            )
        order = 8 if order is None else order
        bank = BankFilter(bands, srate, n, order, output, n_lookback)
        names = [f"{c}_{b}" for c in channel_names for b in bank.band_names]
        spec = {k: list(v) for k, v in bank.bank.bands.items()}
        what = f"FilterBank {spec} ({output})"
        meta = {"bands": spec, "order": order, "output": output, "n_lookback": n_lookback,
                "layout": "channel-major: column c * n_bands + b"}  # fmt: skip
        return _Stage(bank, names, what, meta)
    sos = design(srate, band, notch, 4 if order is None else order, notch_q)
    live = LiveFilter(sos, n)
    what = f"band {list(band)} Hz" if band is not None else ""
    what += f"{', ' if what else ''}notch {notch} Hz" if notch is not None else ""

    def filt(x: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return live.float32(x)

    return _Stage(filt, list(channel_names), what, {"sos": sos.tolist()})


def filter_stream(
    view: Any,
    out: str,
    stop_event: threading.Event,
    *,
    band: Sequence[float] | None = None,
    notch: float | None = None,
    order: int | None = None,
    notch_q: float = 30.0,
    bands: Mapping[str, Sequence[float]] | None = None,
    output: str = "signal",
    n_lookback: int = 5,
    lsl: bool = False,
    publish: Callable[..., Any] | None = None,
    namespace: str | None = None,
    logger: logging.Logger | None = None,
) -> int:
    """Filter ``view``'s stream into the published stream ``out`` until ``stop_event``.

    Every sample that arrives after the call is filtered once, in order, with
    its timestamp; samples lost by the reader (it fell ``capacity`` behind) are
    logged and the filter continues on what follows. Returns the number of
    samples published.

    Parameters
    ----------
    view : SharedStreamView
        The input (regular, numeric).
    out : str
        Name of the output stream (float32, same rate; same channels and labels,
        or ``n_channels * n_bands`` channels ``"<channel>_<band>"`` with ``bands``).
    stop_event : threading.Event
        Set to stop; checked at least every :data:`WAIT_S`.
    band, notch, order, notch_q
        See :func:`design` (``order`` defaults to 4; to 8 with ``bands``).
    bands, output, n_lookback
        Run a :class:`BankFilter` (a FilterBank) instead of band/notch.
    lsl : bool
        Also offer the output as an LSL outlet.
    publish : callable, optional
        :func:`dpshm.publish_stream` or a worker's ``ctx.publish_stream``.
    namespace : str, optional
        The supervisor's namespace (with the default ``publish``).
    """
    logger = logger or log
    stage = _stage(
        view.srate, [str(c) for c in view.channel_names], band, notch, order, notch_q, bands,
        output, n_lookback,
    )  # fmt: skip
    if publish is None:
        from dpshm.shm.publish import publish_stream as publish
    pub = publish(
        out,
        len(stage.channel_names),
        view.srate,
        "float32",
        channel_names=stage.channel_names,
        type=str(view.meta.get("lsl", {}).get("type", "")) or "Filtered",
        lsl=lsl,
        **({"namespace": namespace} if namespace is not None else {}),
        meta={"filter": {"input": view.name, "what": stage.what, **stage.meta}},
    )
    filt = stage.filt
    n = 0
    try:
        logger.info("filtering %r (%s) into %r", view.name, stage.what, out)
        while not stop_event.is_set():
            if not view.wait(WAIT_S):
                continue
            data, ts, lost = view.read_new()
            if lost:
                logger.warning("filter %r: %d input samples lost (reader too slow)", out, lost)
            if len(ts):
                pub.push_chunk(filt(data, ts), ts)
                n += len(ts)
    finally:
        pub.close()
    return n


def run(ctx: Any) -> None:
    """Worker target (``dpshm.control.filter_worker:run``); see the module docstring."""
    kw = dict(ctx.kwargs)
    views = dict(ctx.streams)
    own = None
    if not views:
        name = kw.get("stream")
        if not name:
            raise ConfigError(
                'the filter worker needs an input: START_WORKER with "streams": [NAME] '
                "or kwargs stream = NAME"
            )
        from dpshm.shm.view import SharedStreamView

        own = SharedStreamView(name, namespace=ctx.namespace)
        views = {name: own}
    if len(views) != 1:
        raise ConfigError(f"the filter worker filters one stream; got {sorted(views)}")
    ((name, view),) = views.items()
    try:
        filter_stream(
            view,
            str(kw.get("out") or f"{name}_filtered"),
            ctx.stop_event,
            band=kw.get("band"),
            notch=kw.get("notch"),
            order=None if kw.get("order") is None else int(kw["order"]),
            notch_q=float(kw.get("notch_q", 30.0)),
            bands=kw.get("bands"),
            output=str(kw.get("output", "signal")),
            n_lookback=int(kw.get("n_lookback", 5)),
            lsl=bool(kw.get("lsl", False)),
            publish=ctx.publish_stream,
            logger=ctx.logger,
        )
    finally:
        if own is not None:
            own.close()
